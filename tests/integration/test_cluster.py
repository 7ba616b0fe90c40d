"""Cluster mode, the slots and the client protocol (docs/architecture.md,
"Cluster mode"): three featurekv nodes on 127.0.0.1 share a Kafka
(featurekv-mock-kafka); the repartition topic's group gives each its slots,
the membership topic tells every node the others'. Every node then answers
CLUSTER SLOTS / SHARDS / NODES / INFO alike; redis-py's RedisCluster and
`redis-cli -c` route by themselves; MOVED, CROSSSLOT and KEYSLOT are
compared with a real 3-master Redis Cluster (redis-server); a stopped node's
slots go to the others at once, a kill -9'd one's within the session
timeout; a node keeps its id across restarts; bad configurations are
refused.

Usage: test_cluster.py SERVER MOCK_KAFKA
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fkv_testlib import ServerProcess, wait_until  # noqa: E402
from test_kafka_tools import MockCluster  # noqa: E402
import test_kafka_tools  # noqa: E402
import redis  # noqa: E402
from redis.cluster import RedisCluster, ClusterNode  # noqa: E402

SERVER = sys.argv[1] if len(sys.argv) > 1 else "build/server/featurekv-server"
test_kafka_tools.MOCK = sys.argv[2] if len(sys.argv) > 2 else "build/tools/featurekv-mock-kafka"
PARTITIONS = 8
GROUP = "fkv"
# The mock cluster's group coordinator needs a session timeout over ~3.5 s
# (its first join waits 3 s without heartbeats).
SESSION_MS = 4000


# A table source (docs/architecture.md, "Table sources") fed by FEVENT and
# FSET through the repartition topic (its Kafka topic stays empty).
TABLE_REGISTRY = """
sources:
  catalog:
    topic: product_catalog
    kind: table
    fields:
      product_id: int
      category: string
      list_price: float
entities:
  product: {key: product_id}
views:
  product_catalog:
    entity: product
    source: catalog
    features:
      category:   {agg: last, field: category}
      list_price: {agg: last, field: list_price}
"""


def slots_view(r):
    """CLUSTER SLOTS as a sorted list of (first, last, node id, port)."""
    return sorted((row[0], row[1], row[2][2], row[2][1]) for row in r.execute_command("CLUSTER", "SLOTS"))


def info_of(r):
    text = r.execute_command("CLUSTER", "INFO")
    return dict(line.split(":", 1) for line in text.strip().splitlines())


class Nodes:
    def __init__(self, mock, n, base_dir):
        self.mock = mock
        self.base = base_dir
        self.nodes = [None] * n
        for i in range(n):
            self.start(i)

    def start(self, i):
        d = os.path.join(self.base, "node%d" % i)
        os.makedirs(d, exist_ok=True)
        registry = os.path.join(self.base, "registry.yaml")
        with open(registry, "w") as f:
            f.write(TABLE_REGISTRY)
        self.nodes[i] = ServerProcess(SERVER, shards=2, data_dir=d, directives=[
            ("save", ""), ("registry", registry), ("cluster-enabled", "yes"), ("kafka-brokers", self.mock.bootstrap),
            ("kafka-group", GROUP), ("cluster-repartition-partitions", PARTITIONS),
            ("kafka-property", ["session.timeout.ms", SESSION_MS]), ("kafka-property", ["heartbeat.interval.ms", 500]),
            ("cluster-node-timeout", 6000)]).start()
        return self.nodes[i]

    def live(self):
        return [n for n in self.nodes if n is not None and n.alive()]

    def client(self, node):
        return node.redis(decode_responses=True)

    def settled(self, count, timeout=60):
        """Every live node says cluster_state:ok and shows the same slots,
        held by `count` nodes; returns that view."""
        def agree():
            views = []
            for n in self.live():
                r = self.client(n)
                if info_of(r)["cluster_state"] != "ok":
                    return None
                views.append(slots_view(r))
            if any(v != views[0] for v in views):
                return None
            return views[0] if len({row[2] for row in views[0]}) == count else None
        return wait_until(agree, timeout, interval=0.2, what="%d nodes agreeing on the slots" % count)

    def stop_all(self):
        for n in self.nodes:
            if n is not None and n.alive():
                n.kill()


class ClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mock = MockCluster("--partitions", str(PARTITIONS), "--topic", GROUP + "-repartition")
        assert cls.mock.command("topic %s-repartition-members 1" % GROUP).startswith("ok"), "members topic"
        cls.dir = tempfile.mkdtemp(prefix="fkv-cluster-")
        cls.nodes = Nodes(cls.mock, 3, cls.dir)
        cls.view = cls.nodes.settled(3)

    @classmethod
    def tearDownClass(cls):
        cls.nodes.stop_all()
        cls.mock.kill()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def node_by_port(self, port):
        return next(n for n in self.nodes.live() if n.port == port)

    def owner(self, key):
        slot = self.nodes.client(self.nodes.live()[0]).execute_command("CLUSTER", "KEYSLOT", key)
        for first, last, _, port in slots_view(self.nodes.client(self.nodes.live()[0])):
            if first <= slot <= last:
                return slot, port
        self.fail("slot %d has no owner" % slot)

    def test_1_every_node_tells_the_same_slots(self):
        ids = set()
        for n in self.nodes.live():
            r = self.nodes.client(n)
            self.assertEqual(r.info("cluster")["cluster_enabled"], 1)
            info = info_of(r)
            self.assertEqual((info["cluster_state"], info["cluster_slots_assigned"], info["cluster_known_nodes"],
                              info["cluster_size"]), ("ok", "16384", "3", "3"))
            myid = r.execute_command("CLUSTER", "MYID")
            ids.add(myid)
            nodes = r.execute_command("CLUSTER", "NODES")
            me = [line for line in nodes.splitlines() if "myself" in line]
            self.assertEqual(len(me), 1)
            self.assertTrue(me[0].startswith(myid + " 127.0.0.1:%d@" % n.port), me[0])
            shards = r.execute_command("CLUSTER", "SHARDS")
            self.assertEqual(len(shards), 3)
        self.assertEqual(ids, {row[2] for row in self.view})
        # The ranges cover every slot once, each a run of whole partitions.
        covered = sorted((f, l) for f, l, _, _ in self.view)
        self.assertEqual(covered[0][0], 0)
        self.assertEqual(covered[-1][1], 16383)
        for (a, b), (c, _) in zip(covered, covered[1:]):
            self.assertEqual(b + 1, c)

    def test_2_redirects_and_cluster_clients(self):
        r0 = self.nodes.client(self.nodes.live()[0])
        # A key another node owns: MOVED, as Redis Cluster says it.
        for i in range(100):
            key = "user:%d" % i
            slot, port = self.owner(key)
            if port != self.nodes.live()[0].port:
                break
        with self.assertRaises(redis.ResponseError) as cm:
            r0.execute_command("GET", key)
        self.assertEqual(str(cm.exception), "MOVED %d 127.0.0.1:%d" % (slot, port))
        with self.assertRaises(redis.ResponseError) as cm:
            r0.execute_command("MGET", "a", "b")  # slots 15495 and 3300
        self.assertIn("CROSSSLOT Keys in request don't hash to the same slot", str(cm.exception))
        # redis-py's RedisCluster from one seed routes every key itself.
        rc = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", self.nodes.live()[0].port)], decode_responses=True)
        for i in range(300):
            rc.set("k:%d" % i, "v%d" % i)
        self.assertEqual([rc.get("k:%d" % i) for i in range(300)], ["v%d" % i for i in range(300)])
        rc.mset_nonatomic({"{t}a": "1", "{t}b": "2"})
        self.assertEqual(rc.mget_nonatomic("{t}a", "{t}b"), ["1", "2"])
        # Each key is on the node its slot says, and nowhere else.
        total = 0
        for n in self.nodes.live():
            keys = self.nodes.client(n).execute_command("KEYS", "k:*")
            total += len(keys)
            for k in keys:
                self.assertEqual(self.owner(k)[1], n.port, k)
        self.assertEqual(total, 300)
        slot, port = self.owner("k:7")
        owner = self.nodes.client(self.node_by_port(port))
        self.assertIn("k:7", owner.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000))
        self.assertGreaterEqual(owner.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot), 1)
        rc.close()
        with self.assertRaises(redis.ResponseError) as cm:
            r0.execute_command("FEVENT", "clicks", "{}")
        self.assertIn("unknown source 'clicks'", str(cm.exception))  # (FEVENT itself: test_cluster_ingest.py)
        # redis-cli -c follows the redirects.
        p = subprocess.run(["redis-cli", "-c", "-p", str(self.nodes.live()[0].port), "GET", "k:7"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.stdout.strip(), "v7", p.stderr)

    def test_6_fevent_and_fset_to_a_table_source_through_the_log(self):
        live = self.nodes.live()
        wait_until(lambda: all(self.nodes.client(n).info("cluster")["cluster_restoring_partitions"] == 0 for n in live),
                   30, interval=0.1, what="every node's partitions restored")
        # Any node takes FEVENT; each row reaches its entity's owner.
        for i in range(20):
            row = {"product_id": i, "category": "toys", "list_price": i + 0.5}
            self.assertEqual(self.nodes.client(live[i % 3]).execute_command("FEVENT", "catalog", json.dumps(row)), 1)
        # The latest row wins whatever its time; a field it lacks is cleared.
        self.assertEqual(self.nodes.client(live[1]).execute_command(
            "FEVENT", "catalog", json.dumps({"product_id": 3, "category": "books"})), 1)
        rc = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", live[0].port)], decode_responses=True)
        self.addCleanup(rc.close)
        self.assertEqual(rc.execute_command("FSET", "product:5", "category", "games"), "OK")
        want = {i: ["toys", str(i + 0.5)] for i in range(20)}
        want[3] = ["books", None]
        want[5] = ["games", "5.5"]

        def rows():
            return {i: rc.execute_command("FGET", "product:%d" % i, "category", "list_price") for i in range(20)}
        last = [None]

        def right():
            last[0] = rows()
            return last[0] == want
        try:
            wait_until(right, 30, interval=0.2, what="the catalog rows on their owners")
        except AssertionError:
            self.fail("rows %s, want %s" % (last[0], want))
        # Each row is on its slot's owner only.
        for n in live:
            for k in self.nodes.client(n).execute_command("KEYS", "product:*"):
                self.assertEqual(self.owner(k)[1], n.port, k)

    def test_3_same_replies_as_a_real_redis_cluster(self):
        if shutil.which("redis-server") is None:
            self.skipTest("no redis-server")
        d = tempfile.mkdtemp(prefix="redis-cluster-")
        procs, ports = [], []
        try:
            ports = _free_ports_with_bus(3)
            for i, port in enumerate(ports):
                nd = os.path.join(d, str(i))
                os.makedirs(nd)
                procs.append(subprocess.Popen(
                    ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                     "--dir", nd, "--save", "", "--appendonly", "no"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for port in ports:
                wait_until(lambda: _pings(port), 20, what="redis-server up")
            p = subprocess.run(["redis-cli", "--cluster", "create"] + ["127.0.0.1:%d" % x for x in ports] +
                               ["--cluster-yes"], capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            real = redis.Redis(port=ports[0], decode_responses=True)
            wait_until(lambda: info_of(real)["cluster_state"] == "ok", 30, what="redis cluster ok")
            ours = self.nodes.client(self.nodes.live()[0])
            keys = ["a", "b", "foo", "user:42", "{user:42}.x", "product:7", "x{}y", "{{z}}", "", "\u00e9t\u00e9"]
            for k in keys:
                self.assertEqual(ours.execute_command("CLUSTER", "KEYSLOT", k),
                                 real.execute_command("CLUSTER", "KEYSLOT", k), k)
            for cmd in (("MGET", "a", "b"), ("DEL", "a", "b"), ("MSET", "a", "1", "b", "2")):
                with self.assertRaises(redis.ResponseError) as ours_e:
                    ours.execute_command(*cmd)
                with self.assertRaises(redis.ResponseError) as real_e:
                    real.execute_command(*cmd)
                self.assertEqual(str(ours_e.exception), str(real_e.exception), cmd)
            # MOVED: the same shape (slot, then the owner's address).
            def moved(r, key):
                try:
                    r.execute_command("GET", key)
                    return None
                except redis.ResponseError as e:
                    return str(e)
            for k in ("foo", "bar", "user:1", "user:2"):
                a, b = moved(ours, k), moved(real, k)
                if a and b:
                    self.assertEqual(a.split()[:2], b.split()[:2], k)
                    self.assertRegex(a, r"^MOVED \d+ 127\.0\.0\.1:\d+$")
        finally:
            for p in procs:
                p.kill()
                p.wait()
            shutil.rmtree(d, ignore_errors=True)

    def test_4_a_stopped_node_hands_its_slots_over_and_keeps_its_id(self):
        victim = self.nodes.nodes[2]
        myid = self.nodes.client(victim).execute_command("CLUSTER", "MYID")
        victim.stop()
        t0 = time.time()
        view = self.nodes.settled(2, timeout=60)
        self.assertNotIn(myid, {row[2] for row in view})
        handover = time.time() - t0
        # The same directory: the same node id.
        node = self.nodes.start(2)
        self.assertEqual(self.nodes.client(node).execute_command("CLUSTER", "MYID"), myid)
        self.nodes.settled(3, timeout=60)
        sys.stderr.write("(graceful handover seen in %.1f s)\n" % handover)

    def test_0_a_node_announcing_a_live_node_s_address_is_refused(self):
        taken = self.nodes.live()[0].port
        d = os.path.join(self.dir, "intruder")
        os.makedirs(d, exist_ok=True)
        srv = ServerProcess(SERVER, shards=1, data_dir=d, directives=[
            ("save", ""), ("cluster-enabled", "yes"), ("kafka-brokers", self.mock.bootstrap),
            ("kafka-group", GROUP), ("cluster-repartition-partitions", PARTITIONS),
            ("kafka-property", ["session.timeout.ms", SESSION_MS]), ("cluster-announce-port", taken)])
        with self.assertRaises(Exception) as cm:
            srv.start()
        self.assertIn("announces 127.0.0.1:%d too" % taken, str(cm.exception))
        self.assertEqual(len({row[2] for row in self.nodes.settled(3)}), 3)  # the cluster is as it was

    def test_5_a_killed_node_loses_its_slots_within_the_session_timeout(self):
        victim = self.nodes.nodes[1]
        victim.kill()
        t0 = time.time()
        self.nodes.settled(2, timeout=60)
        took = time.time() - t0
        sys.stderr.write("(kill -9 handover seen in %.1f s)\n" % took)
        self.nodes.start(1)
        self.nodes.settled(3, timeout=60)


def _free_ports_with_bus(n):
    """n ports below 55536 free with their cluster bus port (+10000), which
    redis-server also listens on."""
    import random
    import socket
    rnd = random.Random(os.getpid())
    out = []
    while len(out) < n:
        port = rnd.randrange(20000, 40000)
        ok = True
        for p in (port, port + 10000):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok and port not in out:
            out.append(port)
    return out


def _pings(port):
    try:
        return redis.Redis(port=port, socket_timeout=1).ping()
    except redis.ConnectionError:
        return False


class BadConfigTest(unittest.TestCase):
    def test_cluster_mode_needs_a_shared_kafka_and_a_group(self):
        for directives, want in [
                ([("cluster-enabled", "yes")], "cluster-enabled yes needs kafka-brokers and kafka-group"),
                ([("cluster-enabled", "yes"), ("kafka-brokers", "127.0.0.1:1")], "needs kafka-brokers and kafka-group"),
                ([("cluster-enabled", "yes"), ("kafka-brokers", "mock"), ("kafka-group", "g")], "a Kafka the nodes share"),
        ]:
            srv = ServerProcess(SERVER, directives=[("save", "")] + directives)
            with self.assertRaises(Exception) as cm:
                srv.start()
            self.assertIn(want, str(cm.exception))

    def test_a_standalone_server_says_cluster_support_is_disabled(self):
        srv = ServerProcess(SERVER, directives=[("save", "")]).start()
        try:
            r = srv.redis(decode_responses=True)
            self.assertEqual(r.info("cluster")["cluster_enabled"], 0)
            for cmd in (("CLUSTER", "INFO"), ("CLUSTER", "KEYSLOT", "a"), ("READONLY",)):
                with self.assertRaises(redis.ResponseError) as cm:
                    r.execute_command(*cmd)
                self.assertEqual(str(cm.exception), "This instance has cluster support disabled")
            self.assertEqual(r.execute_command("MGET", "a", "b"), [None, None])  # no slots outside cluster mode
        finally:
            srv.stop()


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1] + sys.argv[3:], verbosity=2)
