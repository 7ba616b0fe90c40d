#!/usr/bin/python3
"""Cluster mode with Kafka ingest (docs/architecture.md, "Cluster mode"):
three featurekv nodes share a Kafka (featurekv-mock-kafka) holding the
source topic user_events (8 partitions). The nodes consume it as the group
`kafka-group`, plan each event and produce it to the repartition partition
owning each entity key's slot; that partition's owner applies it. So every
user:<id> and product:<id> read through redis-py's RedisCluster, from any
seed, equals the model of the produced events (test_kafka_ingest.py's
build_model / check_model), and no node holds a key of a slot it does not
own. A node killed with -9 while events flow: the two others take its slots
(replaying those repartition partitions, -TRYAGAIN until caught up) and
serve exact values; restarted on its snapshot it resumes from the
repartition positions kept there, and the values stay exact. A fourth
node joining takes partitions (restored from the log) and the values stay
exact read through any node.

Usage: test_cluster_ingest.py SERVER MOCK_KAFKA [unittest args]
featurekv-produce is taken from $FKV_PRODUCE, else beside MOCK_KAFKA.
"""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fkv_testlib import ServerProcess, wait_until  # noqa: E402
from test_kafka_tools import MockCluster  # noqa: E402
import test_kafka_tools  # noqa: E402
import test_cluster  # noqa: E402  (its Nodes, info_of, slots_view; its tests are not collected here)
import test_kafka_ingest  # noqa: E402
from test_kafka_ingest import build_model, check_model, read_events, partitions_of  # noqa: E402
from test_snapshots import save_now  # noqa: E402
import logging  # noqa: E402
import redis  # noqa: E402
from redis.cluster import RedisCluster, ClusterNode  # noqa: E402
from redis.crc import key_slot  # noqa: E402
from redis.exceptions import RedisClusterException  # noqa: E402

# redis-py logs every TRYAGAIN it retries (a restoring slot) with a traceback.
logging.getLogger("redis.cluster").setLevel(logging.CRITICAL)

SERVER = sys.argv[1] if len(sys.argv) > 1 else "build/server/featurekv-server"
test_kafka_tools.MOCK = sys.argv[2] if len(sys.argv) > 2 else "build/tools/featurekv-mock-kafka"
PRODUCE = os.environ.get("FKV_PRODUCE") or os.path.join(os.path.dirname(test_kafka_tools.MOCK), "featurekv-produce")
test_kafka_ingest.PRODUCE = PRODUCE  # KafkaIngestTest.produce runs it
REGISTRY = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "conf",
                                        "features.yaml"))
GROUP = test_cluster.GROUP
SOURCE_PARTITIONS = 8
REPARTITION_PARTITIONS = 8  # the mock's --partitions is one count for every --topic: both topics have 8
WAIT_S = 90  # the bound of every wait for ownership or for the values
USERS, PRODUCTS = 60, 25  # as KafkaIngestTest.produce


class IngestNodes(test_cluster.Nodes):
    """test_cluster's nodes, with the demo registry and save rules."""

    def __init__(self, mock, n, base_dir, save, password=None):
        self.save = save
        self.password = password
        self.nodes = []
        try:
            super().__init__(mock, n, base_dir)
        except BaseException:
            self.stop_all()
            raise

    def start(self, i):
        d = os.path.join(self.base, "node%d" % i)
        os.makedirs(d, exist_ok=True)
        self.nodes[i] = ServerProcess(SERVER, shards=2, data_dir=d, directives=[
            ("save", self.save), ("registry", REGISTRY), ("cluster-enabled", "yes"),
            ("kafka-brokers", self.mock.bootstrap), ("kafka-group", GROUP),
            ("cluster-repartition-partitions", REPARTITION_PARTITIONS),
            ("kafka-property", ["session.timeout.ms", test_cluster.SESSION_MS]),
            ("kafka-property", ["heartbeat.interval.ms", 500]),
            ("cluster-node-timeout", 6000)] + ([("requirepass", self.password)] if self.password else [])).start()
        return self.nodes[i]

    def client(self, node):
        return node.redis(decode_responses=True, password=self.password)


def resp_value_end(buf, p):
    """The end of the RESP2/3 value at buf[p:], or None while incomplete."""
    e = buf.find(b"\r\n", p)
    if e < 0:
        return None
    t, line, after = buf[p:p + 1], buf[p + 1:e], e + 2
    if t in b"+-:_,#(":
        return after
    if t in b"$=!":
        n = int(line)
        return after if n < 0 else (after + n + 2 if after + n + 2 <= len(buf) else None)
    n = int(line)
    q = after
    for _ in range(max(0, 2 * n if t in b"%|" else n) + (1 if t == b"|" else 0)):
        q = resp_value_end(buf, q)
        if q is None:
            return None
    return q


def resp3_reply(port, args):
    """The raw bytes of one command's reply over a RESP3 connection."""
    def encode(a):
        return ("*%d\r\n" % len(a)).encode() + b"".join(b"$%d\r\n%s\r\n" % (len(x.encode()), x.encode()) for x in a)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(encode(["HELLO", "3"]) + encode(args))
        data, deadline = b"", time.monotonic() + 10
        while time.monotonic() < deadline:  # HELLO's reply, then the command's
            first = resp_value_end(data, 0) if data else None
            second = resp_value_end(data, first) if first is not None and first < len(data) else None
            if second is not None:
                return data[first:second]
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    raise AssertionError("no RESP3 reply to %r from :%d" % (args, port))


class RoutedReads:
    """Stands for a client in check_model: its FMGET (which cluster mode
    does not fan out yet) becomes one FGET per key, each routed by
    RedisCluster to the key's owner."""

    def __init__(self, rc):
        self.rc = rc

    def execute_command(self, *args):
        assert args[0] == "FMGET", args
        i = args.index("FEATURES")
        return [self.rc.execute_command("FGET", key, *args[i + 1:]) for key in args[1:i]]


class ClusterIngestTest(unittest.TestCase):
    def start_cluster(self, save, password=None):
        self.mock = MockCluster("--partitions", str(SOURCE_PARTITIONS), "--topic", "user_events",
                                "--topic", GROUP + "-repartition")
        self.addCleanup(self.mock.kill)
        self.assertTrue(self.mock.command("topic %s-repartition-members 1" % GROUP).startswith("ok"), "members topic")
        self.dir = tempfile.mkdtemp(prefix="fkv-cluster-ingest-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.nodes = IngestNodes(self.mock, 3, self.dir, save, password)
        self.addCleanup(self.nodes.stop_all)
        return self.nodes.settled(3, timeout=WAIT_S)

    # -- reads through RedisCluster ------------------------------------------

    def cluster_client(self, seed):
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", seed.port)], decode_responses=True,
                            socket_timeout=10, socket_connect_timeout=5)

    def check_routed(self, events, seed):
        rc = self.cluster_client(seed)
        try:
            check_model(self, RoutedReads(rc), events)
        finally:
            rc.close()

    def wait_model(self, events, what, timeout=WAIT_S):
        """Waits until every user and product feature read through a
        RedisCluster (seeded by a live node, a fresh client each try) equals
        the model of `events`; fails with the last mismatch or error."""
        last = ["nothing read"]

        def matches():
            try:
                self.check_routed(events, self.nodes.live()[0])
                return True
            except (AssertionError, redis.RedisError, RedisClusterException) as e:
                last[0] = "%s: %s" % (type(e).__name__, (str(e).splitlines() or [""])[0])
                return False
        t0 = time.monotonic()
        try:
            wait_until(matches, timeout, interval=0.2, what=what)
        except AssertionError:
            self.fail("%s: values never matched the model of %d events within %d s; last: %s"
                      % (what, len(events), timeout, last[0]))
        return time.monotonic() - t0

    # -- what each node holds ------------------------------------------------

    def owned_ranges(self, node):
        view = test_cluster.slots_view(self.nodes.client(node))
        return [(first, last) for first, last, _, port in view if port == node.port]

    def holdings(self, events):
        """None when every node holds only keys of its own slots and the
        nodes together hold exactly the model's keys; else what is wrong."""
        users, products = build_model(events)
        # A product with only clicks and add_to_carts feeds none of its
        # view's aggregations (all filtered by `where`), so it has no key.
        want = len(users) + sum(1 for p in products.values() if p["views"] or p["purchases"])
        total, wrong = 0, []
        for n in self.nodes.live():
            r = self.nodes.client(n)
            ranges = self.owned_ranges(n)
            keys = r.execute_command("KEYS", "*")
            total += r.dbsize()
            wrong += ["%s (slot %d) on :%d" % (k, key_slot(k.encode()), n.port) for k in keys
                      if not any(a <= key_slot(k.encode()) <= b for a, b in ranges)]
        if wrong:
            return "keys of slots the node does not own: %s" % wrong[:5]
        if total != want:
            return "DBSIZE summed over the nodes is %d, the model has %d keys" % (total, want)
        return None

    def owner(self, key):
        """(slot, port of its owner)."""
        slot = key_slot(key.encode())
        for first, last, _, port in test_cluster.slots_view(self.nodes.client(self.nodes.live()[0])):
            if first <= slot <= last:
                return slot, port
        self.fail("slot %d has no owner" % slot)

    def wait_held_right(self, events, timeout=30):
        last = [None]

        def held_right():
            last[0] = self.holdings(events)
            return last[0] is None
        try:
            wait_until(held_right, timeout, interval=0.3, what="each node to hold its own slots' keys")
        except AssertionError:
            self.fail(last[0])

    def source_partitions(self):
        """user_events' partitions each node consumes now (INFO ingest)."""
        return [partitions_of(self.nodes.client(n)) for n in self.nodes.live()]

    # -- the tests -----------------------------------------------------------

    def test_1_every_feature_read_through_any_node_equals_the_model(self):
        self.start_cluster(save="")
        # Several producer seeds, 1,000 events each, keyed by user over 8 partitions.
        seeds = (11, 12, 13)
        for seed in seeds:
            test_kafka_ingest.KafkaIngestTest.produce(self, 1000, seed)
        events = [e for _, e in read_events(self.mock.bootstrap, 1000 * len(seeds))]
        took = self.wait_model(events, "the model through RedisCluster")
        sys.stderr.write("(3,000 events servable from their owners in %.1f s)\n" % took)
        # From every node as the seed: the same values.
        for n in self.nodes.live():
            self.check_routed(events, n)
        # FMGET with keys of every slot, sent to any node: it asks the
        # owners and answers in one reply, in order.
        for n in self.nodes.live():
            check_model(self, self.nodes.client(n), events)
        # RESP3: a key read through another node comes back in the same
        # bytes as read on its owner.
        for key in ("user:1", "product:3", "user:17"):
            _, owner_port = self.owner(key)
            other = next(n for n in self.nodes.live() if n.port != owner_port)
            cmd = ["FMGET", key, "FEATURES", "clicks_1h", "last_action"] if key.startswith("user") else \
                ["FMGET", key, "FEATURES", "views_1h", "buyers_24h"]
            self.assertEqual(resp3_reply(other.port, cmd), resp3_reply(owner_port, cmd), key)
        # The nodes split the source partitions among themselves (INFO ingest) ...
        def split(parts):
            return (sum(len(p) for p in parts) == SOURCE_PARTITIONS
                    and set().union(*parts) == set(range(SOURCE_PARTITIONS)))
        try:
            wait_until(lambda: split(self.source_partitions()), 30, interval=0.2,
                       what="the nodes to split user_events' partitions")
        except AssertionError:
            self.fail("user_events' partitions by node (INFO ingest): %s" % self.source_partitions())
        # ... and each holds its own slots' keys only, the model's keys once in all.
        self.wait_held_right(events)
        self.assertEqual(len({row[2] for row in self.nodes.settled(3, timeout=WAIT_S)}), 3)

    def test_2_kill_9_while_events_flow_loses_nothing_and_counts_nothing_twice(self):
        # Save rules snapshot every second while events flow; the victim also
        # gets an explicit SAVE shortly before it is killed.
        self.start_cluster(save=("1", "1"))
        rnd = random.Random(20261201)
        produced, dropped = 0, 0
        count, rate = 1500, 1000  # 1.5 s of events per round
        for round_ in range(5):
            victim = round_ % 3
            t_save = rnd.uniform(0.1, 0.6)
            t_kill = rnd.uniform(0.7, 1.3)
            result = {}

            def produce(seed=100 + round_):
                try:
                    result["p"] = subprocess.run(
                        [PRODUCE, "--brokers", self.mock.bootstrap, "--count", str(count), "--rate", str(rate),
                         "--users", str(USERS), "--products", str(PRODUCTS), "--seed", str(seed)],
                        capture_output=True, text=True, timeout=120)
                except Exception as e:  # reported by the main thread
                    result["error"] = e
            producer = threading.Thread(target=produce, daemon=True)
            t0 = time.monotonic()
            producer.start()
            time.sleep(t_save)  # places the SAVE and the kill at seeded moments (not a wait)
            save_now(self.nodes.client(self.nodes.nodes[victim]))
            time.sleep(max(0.0, t_kill - (time.monotonic() - t0)))
            self.nodes.nodes[victim].kill()  # SIGKILL
            sys.stderr.write("(round %d: node %d killed at %.2f s)\n" % (round_, victim, time.monotonic() - t0))
            producer.join(150)
            self.assertFalse(producer.is_alive(), "the producer did not finish")
            self.assertNotIn("error", result, result.get("error"))
            self.assertEqual(result["p"].returncode, 0, result["p"].stderr)
            produced += count
            events = [e for _, e in read_events(self.mock.bootstrap, produced)]
            # The two others own every slot and serve exact values.
            self.nodes.settled(2, timeout=WAIT_S)
            took = self.wait_model(events, "round %d: the 2 remaining nodes" % round_)
            sys.stderr.write("(round %d: exact on 2 nodes %.1f s after settling)\n" % (round_, took))
            # Restarted on its own directory (its snapshot): 3 owners, still exact.
            self.nodes.start(victim)
            self.nodes.settled(3, timeout=WAIT_S)
            took = self.wait_model(events, "round %d: the restarted node back" % round_)
            sys.stderr.write("(round %d: exact on 3 nodes %.1f s after settling)\n" % (round_, took))
            dropped += sum(int(self.nodes.client(n).info("cluster").get("cluster_duplicates_dropped", 0))
                           for n in self.nodes.live())
        # The kills left records sent twice (the sources' offsets are
        # committed every 200 ms): the owners dropped them, so the exact
        # values above were not luck.
        self.assertGreater(dropped, 0, "no duplicate record was ever dropped")
        # Partitions of the restarted nodes' snapshots that went elsewhere
        # are dropped after cluster-node-timeout: each node holds its own slots only.
        self.wait_held_right(events)

    def test_3_a_fourth_node_joins_slots_move_to_it_and_values_stay_exact(self):
        self.start_cluster(save="")
        test_kafka_ingest.KafkaIngestTest.produce(self, 1500, 31)
        events = [e for _, e in read_events(self.mock.bootstrap, 1500)]
        self.wait_model(events, "3 nodes before the join")
        # The fourth node joins while events flow: partitions move to it
        # (restored there from the log), the others drop what they gave up.
        self.nodes.nodes.append(None)
        producer = threading.Thread(target=test_kafka_ingest.KafkaIngestTest.produce, args=(self, 1500, 32), daemon=True)
        producer.start()
        self.nodes.start(3)
        producer.join(120)
        self.assertFalse(producer.is_alive(), "the producer did not finish")
        view = self.nodes.settled(4, timeout=WAIT_S)
        self.assertTrue(any(port == self.nodes.nodes[3].port for _, _, _, port in view), view)
        events = [e for _, e in read_events(self.mock.bootstrap, 3000)]
        self.wait_model(events, "4 nodes after the join")
        for n in self.nodes.live():  # any node as the seed, the new one too
            self.check_routed(events, n)
        self.wait_held_right(events)

    def test_4_fevent_and_direct_writes_on_any_node_reach_the_owners_and_survive_a_kill_9(self):
        self.start_cluster(save="")
        rnd = random.Random(4)
        now = int(time.time())
        actions = ("view", "click", "purchase", "add_to_cart")
        events = []
        for i in range(600):
            events.append({"user_id": rnd.randrange(USERS), "product_id": rnd.randrange(PRODUCTS),
                           "action": rnd.choice(actions), "timestamp": now - rnd.randrange(600)})
        # Batches of 20 to whichever node: every FEVENT is keyless, so any
        # node takes it and replies once Kafka has its records.
        for b in range(0, len(events), 20):
            node = self.nodes.live()[(b // 20) % 3]
            batch = [json.dumps(e) for e in events[b:b + 20]]
            self.assertEqual(self.nodes.client(node).execute_command("FEVENT", "user_events", *batch), len(batch))
        check_direct = self.direct_writes()
        # Acknowledged means in the log: killed at once, the node's slots
        # move and nothing of it is lost.
        self.nodes.nodes[1].kill()
        self.nodes.settled(2, timeout=WAIT_S)
        self.wait_model(events, "FEVENTs after a kill -9")
        wait_until(check_direct, WAIT_S, interval=0.3, what="direct writes after a kill -9")
        self.nodes.start(1)
        self.nodes.settled(3, timeout=WAIT_S)
        self.wait_model(events, "FEVENTs with the node back")
        wait_until(check_direct, WAIT_S, interval=0.3, what="direct writes with the node back")
        r = self.nodes.client(self.nodes.live()[0])
        # A rejected event is named; the others are sent.
        bad = json.dumps({"user_id": 1, "product_id": 2, "action": "view"})  # no timestamp
        good = json.dumps({"user_id": 1, "product_id": 2, "action": "view", "timestamp": now})
        with self.assertRaises(redis.ResponseError) as cm:
            r.execute_command("FEVENT", "user_events", good, bad)
        self.assertIn("1 of 2 events rejected: #2", str(cm.exception))
        events.append(json.loads(good))
        self.wait_model(events, "the accepted half of a FEVENT")
        # Inside MULTI it is refused (its reply waits for Kafka).
        with self.assertRaises(redis.ResponseError) as cm:
            pipe = r.pipeline(transaction=True)
            pipe.execute_command("FEVENT", "user_events", good)
            pipe.execute()
        self.assertIn("not available in cluster mode", str(cm.exception))

    def direct_writes(self):
        """Writes of plain keys and FSET through a RedisCluster: each reply is
        what the owner answered running the write from the log. Returns a
        check (true when every written value is read back through a fresh
        RedisCluster) to run after the slots have moved."""
        rc = self.cluster_client(self.nodes.live()[0])
        try:
            counters = {}
            for i in range(40):  # over every node's slots
                k = "counter:%d" % i
                self.assertEqual(rc.incr(k), 1)
                self.assertEqual(rc.incrby(k, i), 1 + i)
                counters[k] = str(1 + i)
            self.assertEqual(rc.hset("h:1", mapping={"a": "1", "b": "2"}), 2)
            self.assertEqual(rc.hset("h:1", mapping={"b": "3", "c": "4"}), 1)
            self.assertIsNone(rc.set("s:1", "one", get=True))
            self.assertEqual(rc.set("s:1", "two", get=True), "one")
            self.assertTrue(rc.pexpire("s:1", 3_600_000))
            with self.assertRaises(redis.ResponseError) as cm:
                rc.incr("h:1")
            self.assertIn("WRONGTYPE", str(cm.exception))
            # One slot's keys on several shards of the node (ten keys: some
            # hash to each of its two shards): run with every shard parked,
            # still in log order.
            parked = sum(self.nodes.client(n).info("cluster")["cluster_writes_run_parked"] for n in self.nodes.live())
            self.assertTrue(rc.mset({"{tag}k%d" % i: str(i) for i in range(10)}))
            self.assertEqual(rc.delete("{tag}k0", "{tag}k1"), 2)
            self.assertEqual(sum(self.nodes.client(n).info("cluster")["cluster_writes_run_parked"]
                                 for n in self.nodes.live()), parked + 2)
            self.assertEqual(rc.execute_command("FSET", "user:5000", "last_action", "refund"), "OK")
            self.assertEqual(rc.execute_command("FGET", "user:5000", "last_action"), ["refund"])
        finally:
            rc.close()
        slot, port = self.owner("s:1")
        owner = next(n for n in self.nodes.live() if n.port == port)
        # Pipelined: each reply in its place, the next write run after it.
        pipe = self.nodes.client(owner).pipeline(transaction=False)
        for _ in range(16):
            pipe.incr("{s:1}n")
            pipe.get("{s:1}n")
        self.assertEqual(pipe.execute(), [x for i in range(1, 17) for x in (i, str(i))])
        # Consecutive writes go out together; one refused in their midst
        # (another node's slot) keeps its place among the replies.
        elsewhere = next(k for k in ("x:%d" % i for i in range(1000)) if self.owner(k)[1] != port)
        pipe = self.nodes.client(owner).pipeline(transaction=False)
        for i in range(40):
            pipe.incr("{s:1}m")
            if i == 20:
                pipe.set(elsewhere, "no")
        got = pipe.execute(raise_on_error=False)
        self.assertEqual(got[:21] + got[22:], list(range(1, 41)))
        self.assertIsInstance(got[21], redis.ResponseError)
        self.assertTrue(str(got[21]).startswith("MOVED"), got[21])
        # A protocol error behind writes waiting for their replies comes after them.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"SET {s:1}p 1\r\nSET {s:1}p 2\r\n*1\r\n$x\r\n")
            data, deadline = b"", time.monotonic() + 10
            while data.count(b"\r\n") < 3 and time.monotonic() < deadline:
                data += sock.recv(4096)
        self.assertTrue(data.startswith(b"+OK\r\n+OK\r\n-ERR Protocol error"), data)
        # A write inside MULTI is refused (its reply comes from the log).
        pipe = self.nodes.client(owner).pipeline(transaction=True)
        pipe.set("s:1", "three")
        with self.assertRaises(redis.ResponseError) as cm:
            pipe.execute()
        self.assertIn("write commands inside MULTI are not available in cluster mode", str(cm.exception))

        def check():
            rc = self.cluster_client(self.nodes.live()[0])
            try:
                for k, v in counters.items():
                    if rc.get(k) != v:
                        return False
                return (rc.hgetall("h:1") == {"a": "1", "b": "3", "c": "4"} and rc.get("s:1") == "two"
                        and rc.get("{s:1}n") == "16"
                        and 0 < rc.pttl("s:1") <= 3_600_000 and rc.get("{tag}k9") == "9"
                        and rc.exists("{tag}k0") == 0
                        and rc.execute_command("FGET", "user:5000", "last_action") == ["refund"])
            except (redis.RedisError, RedisClusterException):
                return False
            finally:
                rc.close()
        self.assertTrue(check())
        return check

    def test_5_with_requirepass_the_nodes_authenticate_to_each_other(self):
        self.start_cluster(save="", password="s3cret-peer")
        test_kafka_ingest.KafkaIngestTest.produce(self, 1000, 51)
        events = [e for _, e in read_events(self.mock.bootstrap, 1000)]

        def exact_everywhere():
            try:
                for n in self.nodes.live():  # FMGET of every slot's keys from each node
                    check_model(self, self.nodes.client(n), events)
                return True
            except (AssertionError, redis.RedisError):
                return False
        wait_until(exact_everywhere, WAIT_S, interval=0.3, what="FMGET through every node with requirepass")
        # A peer that stops answering (SIGSTOP) fails the FMGET that waits on
        # it within the peer timeout (5 s): an error the client retries, no hang.
        paused = self.nodes.live()[2]
        users, _ = build_model(events)
        keys = ["user:%d" % u for u in sorted(users)]
        os.kill(paused.proc.pid, signal.SIGSTOP)
        try:
            r = self.nodes.live()[0].redis(decode_responses=True, password="s3cret-peer", socket_timeout=20)
            t0 = time.monotonic()
            with self.assertRaises(redis.ResponseError) as cm:
                r.execute_command("FMGET", *keys, "FEATURES", "clicks_1h")
            self.assertLess(time.monotonic() - t0, 15)
            self.assertRegex(str(cm.exception), "^(TRYAGAIN|CLUSTERDOWN)")
        finally:
            os.kill(paused.proc.pid, signal.SIGCONT)
        # Without the password a client gets nothing, of course.
        with self.assertRaises(redis.AuthenticationError):
            self.nodes.live()[0].redis().execute_command("FMGET", "user:1", "FEATURES", "clicks_1h")


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1] + sys.argv[3:], verbosity=2)
