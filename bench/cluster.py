#!/usr/bin/python3
"""Cluster mode on one machine (docs/architecture.md, "Cluster mode"), all
on featurekv-mock-kafka (librdkafka's mock cluster, in its own process),
the demo registry (conf/features.yaml), every node `--shards 1`,
`session.timeout.ms` --session-ms, `heartbeat.interval.ms` 500,
`cluster-node-timeout` 6000 (as tests/integration/test_cluster*.py):

1. Ingest throughput. N events (featurekv-produce, 100,000 users, 10,000
   products) are produced first into user_events (8 partitions). Then, on
   those same N events:
   - sidecar: one featurekv-server with `kafka-brokers` and no
     `kafka-group` (it reads every partition itself); done when
     events_applied + events_rejected = N, kafka_lag 0, no batch in flight;
   - cluster of K nodes (K in --nodes, default 1 2 3), a fresh group (and
     repartition topic) each: done when the nodes' repartitioners hold
     every user_events partition at its end (sum of
     cluster_source_messages >= N: a partition that moved is read again
     from its committed offset), every node's kafka_lag (source and
     repartition partitions) is 0 with no batch in flight and no partition
     restoring, every repartition partition is assigned, and the summed
     cluster_records_applied >= the summed cluster_records_sent; checked
     again on a second poll with nothing moved (the time is the first).
   Time is counted from the start of the first process ("from start",
   which includes the mock's group join: ~3 s) and from the first poll
   that saw a message consumed ("from 1st msg", the rate reported). The
   rate per node-process divides by K: the K processes share the
   machine's cores (2 here), so it falls with K by construction; the
   events per CPU-second of the nodes (CPU from each process's start, so
   with its start-up and the idle join) is the cost. "keys" (DBSIZE summed
   over the nodes) must be the sidecar's in every row. Repartition overhead:
   the sidecar's rate (and events per CPU-second) over the 1-node
   cluster's.
2. Fail-over: a fresh 3-node cluster, featurekv-produce --rate R events/s
   flowing; kill -9 one node; time until both others say cluster_state:ok
   and agree on CLUSTER SLOTS held by 2 owners ("slots moved"), and also
   cluster_restoring_partitions 0 on both ("restored"); against
   session.timeout.ms, the floor (the killed member's session must expire
   before its partitions move). The node is restarted (its slots come back
   to it) between repetitions.
3. FGET latency on that cluster (events stopped, ingest caught up): the
   same F sampled user keys read sequentially through redis-py's
   RedisCluster (warmed up: it knows the slots) and through a plain
   redis.Redis connected to each key's owner; p50/p99 and the ratio, and
   the server-side commands per FGET (INFO commandstats): 1.00 for both
   means routing adds no round trip.
4. Direct-write latency on that cluster: --writes SETs (16-byte values,
   keys the node owns) sent sequentially to one node over a plain
   redis.Redis, each reply waiting for the record's produce, Kafka's
   acknowledgement, the node's own fetch of it and its apply; against the
   same SETs on a sidecar featurekv-server (no Kafka) started beside it.
   Then the same count pipelined 16 deep (writes/s) on both. The mock
   broker answers a fetch with nothing new only after fetch.wait.max.ms
   (a real broker answers as soon as a record arrives), so the write
   latency here follows --fetch-wait-ms (the nodes' kafka-fetch-wait-max-ms).

usage: bench/cluster.py [--events 200000] [--nodes "1 2 3"] [--rounds 3]
       [--repartition-partitions 16] [--session-ms 4000] [--rate 1000]
       [--failovers 3] [--fgets 5000] [--writes 2000] [--skip-ingest]
       [--skip-failover] [--skip-latency] [--skip-writes] [--fetch-wait-ms 10]
       [--build build]
Everything listens on 127.0.0.1; every process started is killed on exit.
"""
import argparse
import logging
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import redis  # Debian's python3-redis (/usr/bin/python3)
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
# The test modules read their binaries from sys.argv at import: give them none.
_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import test_cluster  # noqa: E402  (Nodes, slots_view, info_of)
    import test_kafka_tools  # noqa: E402  (MockCluster)
    from fkv_testlib import ServerProcess  # noqa: E402
finally:
    sys.argv = _argv

# redis-py logs every TRYAGAIN / MOVED it retries with a traceback.
logging.getLogger("redis.cluster").setLevel(logging.CRITICAL)

REGISTRY = os.path.join(ROOT, "conf", "features.yaml")
TOPIC = "user_events"
SOURCE_PARTITIONS = 8
FEATURES = ["clicks_1h", "purchases_24h", "products_1h"]
PART_RE = re.compile(r"^partition_(.+)_(\d+)$")
RECORD_BYTES = 170  # ~ a repartition record (1.6 per demo event) of a demo event, with the mock's per-record overhead

SERVER = None
PRODUCE = None
FETCH_WAIT_MS = 10  # --fetch-wait-ms
CLEANUP = []  # callables run on exit, last first


class BenchError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cpu_s(pid):
    """user + system CPU seconds of a live process (0 once it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return 0.0
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs, q):
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def deadline_loop(timeout, what, interval=0.02):
    """Yields until `timeout` s have passed, then raises BenchError(what)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        yield
        time.sleep(interval)
    raise BenchError("timed out after %.0f s: %s" % (timeout, what))


# ---------------------------------------------------------------- processes

def mock(repartition_groups, partitions):
    """A fresh featurekv-mock-kafka with user_events (8 partitions) and, per
    group, its repartition topic (`partitions`) and members topic (1)."""
    m = test_kafka_tools.MockCluster("--partitions", str(SOURCE_PARTITIONS), "--topic", TOPIC)
    CLEANUP.append(m.kill)
    for g in repartition_groups:
        add_group_topics(m, g, partitions)
    return m


def add_group_topics(m, group, partitions):
    for name, p in (("%s-repartition" % group, partitions), ("%s-repartition-members" % group, 1)):
        ans = m.command("topic %s %d" % (name, p))
        if not ans.startswith("ok"):
            raise BenchError("mock: topic %s: %s" % (name, ans))


def produce(brokers, count, rate, seed, timeout=600):
    """featurekv-produce to completion; returns the seconds it took."""
    p = subprocess.run([PRODUCE, "--brokers", brokers, "--topic", TOPIC, "--count", str(count), "--rate", str(rate),
                        "--users", "100000", "--products", "10000", "--seed", str(seed)],
                       capture_output=True, text=True, timeout=timeout)
    m = re.search(r"done: (\d+) sent, (\d+) delivered, (\d+) failed in ([\d.]+) s", p.stderr)
    if p.returncode != 0 or not m or int(m[2]) != count or int(m[3]):
        raise BenchError("featurekv-produce failed (exit %d): %s" % (p.returncode, p.stderr[-2000:]))
    return float(m[4])


class BenchNodes(test_cluster.Nodes):
    """test_cluster's nodes with the demo registry, one shard each, and a
    group (so a repartition topic) of their own."""

    def __init__(self, m, n, base, group, partitions, session_ms):
        self.group, self.partitions, self.session_ms = group, partitions, session_ms
        self.nodes = []
        CLEANUP.append(self.stop_all)
        super().__init__(m, n, base)

    def start(self, i):
        d = os.path.join(self.base, "%s-node%d" % (self.group, i))
        os.makedirs(d, exist_ok=True)
        self.nodes[i] = None
        self.nodes[i] = ServerProcess(SERVER, shards=1, data_dir=d, start_timeout=20, directives=[
            ("save", ""), ("registry", REGISTRY), ("cluster-enabled", "yes"),
            ("kafka-brokers", self.mock.bootstrap), ("kafka-group", self.group),
            ("cluster-repartition-partitions", self.partitions),
            ("kafka-property", ["session.timeout.ms", self.session_ms]),
            ("kafka-property", ["heartbeat.interval.ms", 500]),
            ("cluster-node-timeout", 6000), ("kafka-fetch-wait-max-ms", FETCH_WAIT_MS)]).start()
        return self.nodes[i]

    def pids(self):
        return [n.proc.pid for n in self.live()]


def info(node):
    return node.redis(decode_responses=True).execute_command("INFO", "ingest", "cluster")


def partitions(i):
    """{(topic, partition): {position, committed, high, lag}} of one INFO."""
    out = {}
    for k, v in i.items():
        m = PART_RE.match(k)
        if m and isinstance(v, dict):
            out[(m[1], int(m[2]))] = v
    return out


# ---------------------------------------------------------------- 1. ingest

def sidecar_done(infos, n, _ctx):
    i = infos[0]
    done = (i["events_applied"] + i["events_rejected"] >= n and i["kafka_messages"] >= n and i["kafka_lag"] == 0
            and i["kafka_batches_in_flight"] == 0)
    return done, i["kafka_messages"], (i["kafka_messages"], i["events_applied"])


def cluster_done(infos, n, ctx):
    rtopic, nparts = ctx
    src, rep = {}, {}
    for i in infos:
        for (t, p), v in partitions(i).items():
            if t == TOPIC:
                src[p] = max(src.get(p, 0), v["position"])
            elif t == rtopic:
                rep[p] = v["lag"]
    source_msgs = sum(i["cluster_source_messages"] for i in infos)
    sent = sum(i["cluster_records_sent"] for i in infos)
    applied = sum(i["cluster_records_applied"] for i in infos)
    done = (source_msgs >= n and sorted(src) == list(range(SOURCE_PARTITIONS)) and sum(src.values()) >= n
            and sorted(rep) == list(range(nparts)) and not any(rep.values())
            and all(i["kafka_lag"] == 0 and i["kafka_batches_in_flight"] == 0
                    and i["cluster_restoring_partitions"] == 0 for i in infos)
            and applied >= sent)
    return done, source_msgs, (source_msgs, sent, applied)


def measure(start, done, n, ctx, timeout, poll_s):
    """Starts the processes (start() returns (nodes, pids)), polls their INFO
    until done(infos) holds on two polls in a row with the same counters;
    returns the figures."""
    t0 = time.monotonic()
    nodes, pids = start()
    t_first = m_first = None
    candidate = None
    for _ in deadline_loop(timeout, "%d events applied (see the counters above)" % n, poll_s):
        t = time.monotonic()
        try:
            infos = [info(x) for x in nodes]
        except redis.RedisError as e:
            log("  INFO failed (%s): retrying" % e)
            continue
        ok, msgs, counters = done(infos, n, ctx)
        if t_first is None and msgs > 0:
            t_first, m_first = t, msgs
        if not ok:
            candidate = None
            continue
        if candidate is not None and candidate[1] == counters and t - candidate[0] >= 0.1:
            t_done = candidate[0]
            break
        if candidate is None or candidate[1] != counters:
            candidate = (t, counters)
    cpu = sum(cpu_s(p) for p in pids)
    keys = sum(x.redis(decode_responses=True).dbsize() for x in nodes)  # the same in every mode
    dups = sum(i.get("cluster_duplicates_dropped", 0) for i in infos)
    rebal = sum(i.get("kafka_rebalances", 0) for i in infos)
    if t_first is not None and t_done > t_first and m_first < n:
        first, rate = t_done - t_first, (n - m_first) / (t_done - t_first)
    else:  # everything was consumed before the first poll: counted from the start
        first, rate = t_done - t0, n / (t_done - t0)
    return {"from_start": t_done - t0, "from_first": first, "rate": rate, "cpu": cpu, "keys": keys, "counters": counters, "dups": dups,
            "rebalances": rebal, "per_cpu": n / cpu if cpu > 0 else 0.0}


def ingest(a, work):
    est = a.events * 1.6 * RECORD_BYTES / a.repartition_partitions
    if est > 3.5 * 2 ** 20:
        log("warning: ~%.1f MiB per repartition partition: librdkafka's mock keeps ~5 MiB per partition and drops "
            "older data (more --repartition-partitions)" % (est / 2 ** 20))
    groups = ["ing%d-k%d" % (r, k) for r in range(a.rounds) for k in a.nodes]
    m = mock(groups, a.repartition_partitions)
    log("producing %d events into %s (%d partitions) ..." % (a.events, TOPIC, SOURCE_PARTITIONS))
    secs = produce(m.bootstrap, a.events, 0, 1)
    log("  produced in %.1f s" % secs)
    results = {}  # label -> [result per round]
    try:
        for r in range(a.rounds):
            def sidecar():
                s = ServerProcess(SERVER, shards=1, start_timeout=20, directives=[
                    ("save", ""), ("registry", REGISTRY), ("kafka-brokers", m.bootstrap)])
                CLEANUP.append(s.kill)
                s.start()
                return [s], [s.proc.pid]
            log("round %d: sidecar" % (r + 1))
            res = measure(sidecar, sidecar_done, a.events, None, a.timeout, a.poll_ms / 1000)
            CLEANUP.pop()()
            results.setdefault("sidecar", []).append(res)
            for k in a.nodes:
                group = "ing%d-k%d" % (r, k)
                holder = []

                def cluster(k=k, group=group):
                    holder.append(BenchNodes(m, k, work, group, a.repartition_partitions, a.session_ms))
                    return holder[0].nodes, holder[0].pids()
                log("round %d: cluster of %d" % (r + 1, k))
                try:
                    res = measure(cluster, cluster_done, a.events, (group + "-repartition", a.repartition_partitions),
                                  a.timeout, a.poll_ms / 1000)
                finally:
                    if holder:
                        holder[0].stop_all()
                results.setdefault(k, []).append(res)
    finally:
        m.kill()

    def med(label, key):
        return statistics.median(x[key] for x in results[label])
    side_rate, side_cpu = med("sidecar", "rate"), med("sidecar", "per_cpu")
    print()
    print("1. Ingest: %d events of %s (%d partitions) preloaded on featurekv-mock-kafka; %d CPU cores on this "
          "machine, shared by the mock and every node; %d repartition partitions; median of %d round(s)"
          % (a.events, TOPIC, SOURCE_PARTITIONS, os.cpu_count() or 0, a.repartition_partitions, a.rounds))
    row = "%-9s %10s %12s %9s %13s %8s %9s %8s %9s %7s   %s"
    print(row % ("mode", "from start", "from 1st msg", "events/s", "ev/s per node", "node CPU", "ev/CPU-s", "rate vs",
                 "CPU/ev vs", "keys", "source msgs / sent / applied, dups, rebalances"))
    print(row % ("", "s", "s", "", "process", "s", "", "sidecar", "sidecar", "", ""))
    for label in ["sidecar"] + list(a.nodes):
        rs = results[label]
        last = rs[-1]
        k = 1 if label == "sidecar" else label
        rate, per_cpu = med(label, "rate"), med(label, "per_cpu")
        name = "sidecar" if label == "sidecar" else "cluster %d" % label
        counters = "/".join(str(c) for c in last["counters"])
        extra = "" if label == "sidecar" else ", %d, %d" % (last["dups"], last["rebalances"])
        print(row % (name, "%.2f" % med(label, "from_start"), "%.2f" % med(label, "from_first"), "%.0f" % rate,
                     "%.0f" % (rate / k), "%.2f" % med(label, "cpu"), "%.0f" % per_cpu, "%.2f" % (rate / side_rate),
                     "%.2f" % (side_cpu / per_cpu if per_cpu else 0.0), last["keys"], counters + extra))
    if 1 in results:
        print("repartition overhead (sidecar / 1-node cluster): %.2fx the rate, %.2fx the CPU per event"
              % (side_rate / med(1, "rate"), side_cpu / med(1, "per_cpu")))


# ---------------------------------------------------------------- 2. fail-over

def cluster_views(nodes):
    """(every node ok and agreeing, owners, restoring partitions per node)."""
    views, restoring = [], []
    for n in nodes:
        r = n.redis(decode_responses=True, socket_timeout=5)
        if test_cluster.info_of(r)["cluster_state"] != "ok":
            return False, 0, None
        views.append(test_cluster.slots_view(r))
        restoring.append(int(r.info("cluster")["cluster_restoring_partitions"]))
    agree = all(v == views[0] for v in views)
    return agree, len({row[2] for row in views[0]}) if agree else 0, restoring


def wait_settled(nodes, count, timeout):
    for _ in deadline_loop(timeout, "%d nodes owning the slots, none restoring" % count, 0.05):
        ok, owners, restoring = cluster_views(nodes.live())
        if ok and owners == count and not any(restoring):
            return


def failover(a, work):
    group = "fo"
    m = mock([group], a.repartition_partitions)
    nodes = BenchNodes(m, 3, work, group, a.repartition_partitions, a.session_ms)
    t = time.monotonic()
    wait_settled(nodes, 3, 120)
    log("fail-over: 3 nodes settled %.1f s after the last start" % (time.monotonic() - t))
    feeder = subprocess.Popen([PRODUCE, "--brokers", m.bootstrap, "--topic", TOPIC, "--count", "0", "--rate",
                               str(a.rate), "--users", "100000", "--products", "10000", "--seed", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop_feeder():
        if feeder.poll() is None:
            feeder.terminate()
            try:
                feeder.wait(timeout=40)
            except subprocess.TimeoutExpired:
                feeder.kill()
                feeder.wait(timeout=10)
    CLEANUP.append(stop_feeder)
    time.sleep(2)  # events flowing to every node before the first kill (not a wait for a condition)
    rows = []
    for rep in range(a.failovers):
        i = rep % 3
        victim = nodes.nodes[i]
        survivors = [n for n in nodes.live() if n is not victim]
        t0 = time.monotonic()
        victim.kill()  # SIGKILL
        moved = None
        for _ in deadline_loop(a.timeout, "the 2 others to take the killed node's slots", 0.02):
            try:
                ok, owners, restoring = cluster_views(survivors)
            except redis.RedisError:
                continue
            t = time.monotonic() - t0
            if ok and owners == 2 and moved is None:
                moved = t
            if ok and owners == 2 and not any(restoring):
                rows.append((rep + 1, i, moved, t))
                break
        log("  kill -9 of node %d: slots moved in %.2f s, restored in %.2f s" % (i, moved, t))
        nodes.start(i)
        t = time.monotonic()
        wait_settled(nodes, 3, a.timeout)
        log("  node %d back, 3 owners, none restoring, %.1f s after its start" % (i, time.monotonic() - t))
        time.sleep(1)  # events flowing to the 3 nodes again before the next kill
    stop_feeder()
    print()
    print("2. Fail-over: 3 nodes, featurekv-produce --rate %d flowing, kill -9 of one node; session.timeout.ms %d "
          "(the floor), heartbeat.interval.ms 500, cluster-node-timeout 6000"
          % (a.rate, a.session_ms))
    print("%-4s %-7s %15s %12s %20s" % ("rep", "killed", "slots moved, s", "restored, s", "restored / session"))
    for rep, i, moved, done in rows:
        print("%-4d node %-2d %15.2f %12.2f %20.2f" % (rep, i, moved, done, done * 1000 / a.session_ms))
    print("median restored: %.2f s = %.2fx session.timeout.ms"
          % (statistics.median(r[3] for r in rows), statistics.median(r[3] for r in rows) * 1000 / a.session_ms))
    return m, nodes


# ---------------------------------------------------------------- 3. FGET latency

def commands(nodes):
    """Commands the nodes ran so far, INFO itself left out."""
    total = 0
    for n in nodes:
        for k, v in n.redis(decode_responses=True).info("commandstats").items():
            if k != "cmdstat_info":
                total += v["calls"]
    return total


def latency(a, nodes):
    live = nodes.live()
    # Ingest caught up: the reads do not share the cores with it.
    for _ in deadline_loop(a.timeout, "the nodes to catch up before the FGETs", 0.05):
        infos = [info(n) for n in live]
        if all(i["kafka_lag"] == 0 and i["kafka_batches_in_flight"] == 0 for i in infos):
            break
    owner = {}
    for n in live:
        for k in n.redis(decode_responses=True).scan_iter(match="user:*", count=1000):
            owner[k] = n.port
    keys = sorted(owner)
    random.Random(3).shuffle(keys)
    keys = keys[:a.fgets]
    if not keys:
        raise BenchError("no user:* key on any node")
    direct = {n.port: redis.Redis(host="127.0.0.1", port=n.port, decode_responses=True, socket_timeout=10)
              for n in live}
    rc = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", live[0].port)], decode_responses=True,
                      socket_timeout=10, socket_connect_timeout=5)
    CLEANUP.append(rc.close)

    def via_direct(k):
        return direct[owner[k]].execute_command("FGET", k, *FEATURES)

    def via_cluster(k):
        return rc.execute_command("FGET", k, *FEATURES)
    for k in keys[:1000]:  # warm-up: connections to every node, the slots known
        if via_direct(k) != via_cluster(k):
            raise BenchError("FGET %s differs between the owner and RedisCluster" % k)
    lat = {"direct": [], "cluster": []}
    cmds = {"direct": 0, "cluster": 0}
    for _ in range(a.latency_rounds):
        for name, fn in (("direct", via_direct), ("cluster", via_cluster)):
            c0 = commands(live)
            for k in keys:
                t = time.perf_counter_ns()
                fn(k)
                lat[name].append((time.perf_counter_ns() - t) / 1000.0)
            cmds[name] += commands(live) - c0
    print()
    print("3. FGET %s of %d user keys, sequential, 1 connection per node, %d round(s) alternating; redis-py %s"
          % (" ".join(FEATURES), len(keys), a.latency_rounds, redis.__version__))
    print("%-32s %9s %9s %9s %16s" % ("client", "p50 us", "p99 us", "mean us", "server cmds/FGET"))
    for name, label in (("direct", "redis.Redis to the owner"), ("cluster", "RedisCluster (routes itself)")):
        xs = lat[name]
        print("%-32s %9.1f %9.1f %9.1f %16.2f" % (label, pct(xs, 0.5), pct(xs, 0.99), statistics.mean(xs),
                                                 cmds[name] / len(xs)))
    print("ratio RedisCluster / direct: p50 %.2f, p99 %.2f"
          % (pct(lat["cluster"], 0.5) / pct(lat["direct"], 0.5), pct(lat["cluster"], 0.99) / pct(lat["direct"], 0.99)))


def writes(a, nodes):
    node = nodes.live()[0]
    r = node.redis(decode_responses=True, socket_timeout=40)
    slots = [(f, l) for f, l, _, port in test_cluster.slots_view(r) if port == node.port]
    keys = []
    i = 0
    while len(keys) < a.writes:  # keys of this node's slots (redis-py's CRC16)
        k = "w:%d" % i
        i += 1
        if any(f <= key_slot(k.encode()) <= l for f, l in slots):
            keys.append(k)
    side = ServerProcess(SERVER, shards=1, start_timeout=20, directives=[("save", ""), ("registry", REGISTRY)])
    CLEANUP.append(side.kill)
    side.start()
    sr = side.redis(decode_responses=True)
    value = "v" * 16
    lat = {"sidecar": [], "cluster": []}
    rate = {}
    for name, client in (("sidecar", sr), ("cluster", r)):
        for k in keys[:200]:  # warm-up
            client.set(k, value)
        for k in keys:
            t = time.perf_counter_ns()
            client.set(k, value)
            lat[name].append((time.perf_counter_ns() - t) / 1000.0)
        t = time.perf_counter()
        for b in range(0, len(keys), 16):
            p = client.pipeline(transaction=False)
            for k in keys[b:b + 16]:
                p.set(k, value)
            p.execute()
        rate[name] = len(keys) / (time.perf_counter() - t)
    for k in keys[:50]:
        if r.get(k) != value:
            raise BenchError("SET %s not read back from the cluster node" % k)
    print()
    print("4. SET of %d keys the node owns, 16-byte values, sequential, then pipelined 16 deep" % len(keys))
    print("%-40s %9s %9s %9s %12s" % ("server", "p50 us", "p99 us", "mean us", "P16 SET/s"))
    for name, label in (("sidecar", "featurekv sidecar (no Kafka)"), ("cluster", "cluster node (through the log)")):
        xs = lat[name]
        print("%-40s %9.1f %9.1f %9.1f %12.0f" % (label, pct(xs, 0.5), pct(xs, 0.99), statistics.mean(xs), rate[name]))
    print("ratio cluster / sidecar: p50 %.1f, p99 %.1f, P16 throughput %.2f"
          % (pct(lat["cluster"], 0.5) / pct(lat["sidecar"], 0.5), pct(lat["cluster"], 0.99) / pct(lat["sidecar"], 0.99),
             rate["cluster"] / rate["sidecar"]))


# ---------------------------------------------------------------- main

def main():
    global SERVER, PRODUCE, FETCH_WAIT_MS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200000, help="events preloaded for the ingest runs")
    ap.add_argument("--nodes", default="1 2 3", help="cluster sizes of the ingest runs")
    ap.add_argument("--rounds", type=int, default=3, help="ingest rounds (medians)")
    ap.add_argument("--repartition-partitions", type=int, default=16)
    ap.add_argument("--session-ms", type=int, default=4000, help="session.timeout.ms (the mock needs > ~3500)")
    ap.add_argument("--rate", type=int, default=1000, help="events/s flowing during the fail-overs")
    ap.add_argument("--failovers", type=int, default=3)
    ap.add_argument("--fgets", type=int, default=5000, help="keys read by each client per round")
    ap.add_argument("--latency-rounds", type=int, default=2)
    ap.add_argument("--writes", type=int, default=2000, help="SETs per client in the write-latency run")
    ap.add_argument("--fetch-wait-ms", type=int, default=10,
                    help="the nodes' kafka-fetch-wait-max-ms (the mock answers an empty fetch only after it)")
    ap.add_argument("--poll-ms", type=float, default=20, help="INFO polling interval of the ingest runs")
    ap.add_argument("--timeout", type=float, default=120, help="bound of every wait, s")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-failover", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-writes", action="store_true")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    a = ap.parse_args()
    a.nodes = [int(x) for x in a.nodes.split()]
    FETCH_WAIT_MS = a.fetch_wait_ms
    SERVER = os.path.join(a.build, "server/featurekv-server")
    test_kafka_tools.MOCK = os.path.join(a.build, "tools/featurekv-mock-kafka")
    PRODUCE = os.path.join(a.build, "tools/featurekv-produce")
    for b in (SERVER, test_kafka_tools.MOCK, PRODUCE):
        if not os.access(b, os.X_OK):
            sys.exit("build first: %s missing" % b)
    print("command:", " ".join(sys.argv), flush=True)

    def on_signal(sig, _frame):
        raise SystemExit("stopped by signal %d" % sig)
    signal.signal(signal.SIGTERM, on_signal)
    work = tempfile.mkdtemp(prefix="fkv-clusterbench-")
    t0 = time.monotonic()
    try:
        if not a.skip_ingest:
            ingest(a, work)
        if not (a.skip_failover and a.skip_latency and a.skip_writes):
            if a.skip_failover:
                m = mock(["fo"], a.repartition_partitions)
                nodes = BenchNodes(m, 3, work, "fo", a.repartition_partitions, a.session_ms)
                produce(m.bootstrap, 20000, 0, 2)
                wait_settled(nodes, 3, a.timeout)
            else:
                m, nodes = failover(a, work)
            if not a.skip_latency:
                latency(a, nodes)
            if not a.skip_writes:
                writes(a, nodes)
    except BenchError as e:
        sys.exit("bench/cluster.py: %s" % e)
    finally:
        for f in reversed(CLEANUP):
            try:
                f()
            except Exception as e:  # keep killing the others
                log("cleanup: %s" % e)
        shutil.rmtree(work, ignore_errors=True)
    print("\n(total %.0f s)" % (time.monotonic() - t0))


if __name__ == "__main__":
    main()
