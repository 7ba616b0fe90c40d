#!/usr/bin/python3
"""The metrics endpoint: /metrics through promtool and a real Prometheus
scraping it, /healthz, /readyz during and after a Kafka backlog, and a
metrics port under garbage and 1,000 connections while the Redis port
keeps answering.

usage: test_metrics.py SERVER MOCK_KAFKA PRODUCE
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fkv_testlib import ServerProcess, wait_until  # noqa: E402
from prom import Prometheus, dashboard_targets, free_port, http_get, parse_exposition, sample_values  # noqa: E402
from test_kafka_tools import MockCluster  # noqa: E402
import test_kafka_tools  # noqa: E402

SERVER = sys.argv.pop(1) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "build/server/featurekv-server"
test_kafka_tools.MOCK = sys.argv.pop(1) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") \
    else "build/tools/featurekv-mock-kafka"
PRODUCE = sys.argv.pop(1) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "build/tools/featurekv-produce"
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
REGISTRY = os.path.join(ROOT, "conf", "features.yaml")
DASHBOARD = os.path.join(ROOT, "conf", "grafana", "featurekv.json")
ALERTS = os.path.join(ROOT, "conf", "alerts.yml")


def event(user, product, action, ts):
    return json.dumps({"user_id": user, "product_id": product, "action": action, "timestamp": ts})


class MetricsEndpointTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mport = free_port()
        cls.srv = ServerProcess(SERVER, shards=2, directives=[("registry", REGISTRY), ("save", ""),
                                                              ("metrics-port", str(cls.mport))]).start()
        cls.r = cls.srv.redis(decode_responses=True)

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def tearDown(self):
        self.assertTrue(self.srv.alive(), "featurekv died:\n" + self.srv.diagnostics())

    def metrics(self):
        status, body, headers = http_get(self.mport, "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/plain; version=0.0.4"))
        return body

    def test_exposition_passes_promtool_and_counts_what_happened(self):
        now = int(time.time())
        self.r.set("k", "v")
        for _ in range(5):
            self.r.get("k")
        with self.assertRaises(Exception):
            self.r.execute_command("GET")  # refused: wrong arity
        with self.assertRaises(Exception):
            self.r.hset("k", "f", "v")  # fails: WRONGTYPE
        with self.assertRaises(Exception):  # one bad event of three
            self.r.execute_command("FEVENT", "user_events", event(1, 2, "click", now), event(1, 3, "view", now), "{bad")
        body = self.metrics()
        p = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        m = parse_exposition(body)
        get = frozenset({("command", "get")})
        self.assertGreaterEqual(m[("featurekv_commands_total", get)], 5)
        self.assertGreaterEqual(m[("featurekv_command_rejected_total", get)], 1)
        self.assertGreaterEqual(m[("featurekv_command_errors_total", frozenset({("command", "hset")}))], 1)
        self.assertEqual(m[("featurekv_command_duration_seconds_count", get)], m[("featurekv_commands_total", get)])
        for shard in ("0", "1"):
            self.assertGreaterEqual(m[("featurekv_shard_loop_lag_seconds", frozenset({("shard", shard)}))], 0)
        self.assertEqual(m[("featurekv_command_duration_seconds_bucket", get | {("le", "+Inf")})],
                         m[("featurekv_commands_total", get)])
        self.assertGreaterEqual(m[("featurekv_events_applied_total", frozenset({("view", "user_activity")}))], 2)
        self.assertGreaterEqual(m[("featurekv_events_rejected_total",
                                   frozenset({("source", "user_events"), ("reason", "invalid_json")}))], 1)
        freshness = m[("featurekv_view_freshness_seconds", frozenset({("view", "user_activity")}))]
        self.assertTrue(-1 <= freshness < 120, freshness)
        wait_until(lambda: parse_exposition(self.metrics())[("featurekv_keys", frozenset())] == self.r.dbsize(),
                   timeout=10, what="featurekv_keys to equal DBSIZE")
        self.assertEqual(m[("featurekv_ready", frozenset())], 1)
        self.assertGreater(m[("featurekv_memory_used_bytes", frozenset())], 0)

    def test_health_and_errors(self):
        self.assertEqual(http_get(self.mport, "/healthz")[:2], (200, "ok\n"))
        self.assertEqual(http_get(self.mport, "/readyz")[:2], (200, "ready\n"))  # no Kafka: ready once loaded
        self.assertEqual(http_get(self.mport, "/nope")[0], 404)
        self.assertEqual(http_get(self.mport, "/metrics?x=1")[0], 200)
        status, _, headers = http_get(self.mport, "/metrics", method="POST")
        self.assertEqual(status, 405)
        self.assertEqual(headers.get("Allow"), "GET")
        for bad in (b"garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                    b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", self.mport), timeout=10) as s:
                s.sendall(bad)
                reply = b""
                while True:  # the server answers 400 and closes
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
                self.assertTrue(reply.startswith(b"HTTP/1.1 400"), (bad[:40], reply[:80]))
        self.assertEqual(self.r.ping(), True)
        # Keep-alive: two requests on one connection.
        c = http.client.HTTPConnection("127.0.0.1", self.mport, timeout=10)
        for path in ("/healthz", "/metrics"):
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
        c.close()

    def test_a_thousand_connections_do_not_disturb_the_redis_port(self):
        socks = []
        try:
            for _ in range(1000):
                s = socket.socket()
                s.settimeout(5)
                try:
                    s.connect(("127.0.0.1", self.mport))
                except OSError:
                    s.close()
                    continue
                s.sendall(b"GET /metr")  # a request that never ends
                socks.append(s)
            t0 = time.time()
            for i in range(200):
                self.assertEqual(self.r.set("c%d" % i, i), True)
                self.assertEqual(self.r.get("c%d" % i), str(i))
            self.assertLess(time.time() - t0, 10)
        finally:
            for s in socks:
                s.close()
        # Once they are gone the endpoint serves again.
        wait_until(lambda: http_get(self.mport, "/healthz", timeout=2)[0] == 200, timeout=30,
                   what="/healthz after the connections closed")

    def test_prometheus_scrapes_it_and_every_dashboard_query_evaluates(self):
        now = int(time.time())
        events = [event(u, u % 7, "click" if u % 3 else "view", now) for u in range(300)]
        self.assertEqual(self.r.execute_command("FEVENT", "user_events", *events), 300)
        with Prometheus("127.0.0.1:%d" % self.mport, rule_files=[ALERTS]) as prom:
            prom.wait_for('up{job="featurekv"}', lambda r: list(sample_values(r).values()) == [1.0], timeout=30)
            applied = int(self.r.info("ingest")["events_applied"])
            # Every event of this test feeds the user view: its counter is INFO's count.
            prom.wait_for('featurekv_events_applied_total{view="user_activity"}',
                          lambda r: list(sample_values(r).values()) == [float(applied)], timeout=30)
            for _ in range(50):
                self.r.get("x")
            q = prom.wait_for('histogram_quantile(0.99, sum by (le) (rate(featurekv_command_duration_seconds_bucket'
                              '{command="get"}[1m])))', lambda r: len(r) == 1, timeout=30)
            self.assertFalse(q[0]["value"][1] in ("NaN",), q)
            float(q[0]["value"][1])
            targets = dashboard_targets(DASHBOARD)
            self.assertGreater(len(targets), 20)
            for title, raw, expr in targets:
                try:
                    prom.query(expr)
                except Exception as e:  # Prometheus's error text for an invalid query
                    self.fail("panel %r: %s: %s" % (title, raw, e))


class ConfFilesTest(unittest.TestCase):
    """The example Prometheus files: promtool checks them and runs the alert rules' unit tests."""

    def test_prometheus_files_pass_promtool(self):
        conf = os.path.join(ROOT, "conf")
        for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"],
                     ["check", "config", "prometheus.yml"]):
            p = subprocess.run(["promtool"] + args, cwd=conf, capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, " ".join(args) + "\n" + p.stdout + p.stderr)


class LoadingReadinessTest(unittest.TestCase):
    """While a snapshot loads, /healthz is 200 and /readyz 503 "loading the snapshot"; then 200."""

    def test_readyz_waits_for_the_snapshot_load(self):
        data = tempfile.mkdtemp(prefix="fkv-load-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", data], check=False))
        srv = ServerProcess(SERVER, shards=2, data_dir=data, directives=[("registry", REGISTRY), ("save", "")]).start()
        r = srv.redis(decode_responses=True)
        for i in range(0, 400, 100):
            r.mset({"k%d" % j: "v" for j in range(i, i + 100)})
        self.assertTrue(r.save())
        srv.stop()
        mport = free_port()
        # key-load-delay (as Redis's): 5 ms per record makes the load last about 2 s.
        srv = ServerProcess(SERVER, shards=2, data_dir=data, start_timeout=60, directives=[
            ("registry", REGISTRY), ("save", ""), ("metrics-port", str(mport)), ("key-load-delay", "5000")])
        started = threading.Thread(target=srv.start)
        started.start()
        self.addCleanup(srv.stop)

        def answer(path):
            if not started.is_alive() and srv.port is None:
                raise AssertionError("the server did not start:\n" + srv.diagnostics())
            try:
                return http_get(mport, path, timeout=5)
            except OSError:  # not listening yet
                return None

        seen = wait_until(lambda: (lambda a: a if a and a[0] == 503 else None)(answer("/readyz")), timeout=30,
                          what="/readyz to answer 503 during the load")
        self.assertEqual(seen[1].strip(), "loading the snapshot")
        self.assertEqual(answer("/healthz")[0], 200)  # alive while loading
        started.join(60)
        self.assertFalse(started.is_alive())
        self.assertIsNotNone(srv.port, "the server never became ready")
        wait_until(lambda: (answer("/readyz") or (0,))[0] == 200, timeout=30, what="/readyz 200 after the load")
        self.assertEqual(int(srv.redis().dbsize()), 400)


@unittest.skipIf(os.environ.get("FKV_NO_KAFKA_MOCK"), "librdkafka's mock cluster crashes under ThreadSanitizer")
class ReadinessTest(unittest.TestCase):
    """/readyz is 503 while a Kafka backlog is consumed and 200 once caught up."""

    def test_readyz_waits_for_the_backlog(self):
        mock = MockCluster("--partitions", "4", "--topic", "user_events")
        self.addCleanup(mock.kill)
        p = subprocess.run([PRODUCE, "--brokers", mock.bootstrap, "--count", "60000", "--rate", "0",
                            "--users", "500", "--products", "50", "--seed", "3"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        mport = free_port()
        # Small fetches make the backlog last seconds, not milliseconds.
        srv = ServerProcess(SERVER, shards=2, directives=[
            ("registry", REGISTRY), ("save", ""), ("metrics-port", str(mport)), ("kafka-brokers", mock.bootstrap),
            ("ready-max-lag", "100"), ("kafka-property", ["max.partition.fetch.bytes", "2048"])]).start()
        self.addCleanup(srv.stop)
        r = srv.redis(decode_responses=True)
        reasons = []
        deadline = time.time() + 120
        while time.time() < deadline:
            status, body, _ = http_get(mport, "/readyz")
            if status == 200:
                break
            self.assertEqual(status, 503)
            reasons.append(body.strip())
            time.sleep(0.02)
        else:
            self.fail("never ready; last reasons: %r" % reasons[-3:])
        self.assertTrue(any("lag" in why and "ready-max-lag 100" in why for why in reasons), reasons[:5])
        info = r.info("ingest")
        for k, v in info.items():
            if k.startswith("partition_"):
                lag = int(dict(kv.split("=") for kv in v.split(","))["lag"]) if isinstance(v, str) else v["lag"]
                self.assertLessEqual(lag, 100, (k, v))
        wait_until(lambda: int(r.info("ingest")["events_applied"]) == 60000, timeout=120, what="all events applied")
        self.assertEqual(http_get(mport, "/readyz")[0], 200)
        m = parse_exposition(http_get(mport, "/metrics")[1])
        lags = [v for (name, labels), v in m.items() if name == "featurekv_kafka_lag_messages"]
        self.assertEqual(len(lags), 4)
        self.assertEqual(m[("featurekv_kafka_messages_total", frozenset())], 60000)
        for shard in ("0", "1"):  # every batch applied: nothing queued on a shard
            self.assertEqual(m[("featurekv_kafka_shard_queue_batches", frozenset({("shard", shard)}))], 0)
        self.assertEqual(m[("featurekv_event_to_servable_seconds_count", frozenset())], 60000)
        # A shutdown turns /healthz to 503 before the port closes (or the port closes).
        srv.stop()
        try:
            status = http_get(mport, "/healthz", timeout=2)[0]
            self.assertEqual(status, 503)
        except OSError:
            pass


if __name__ == "__main__":
    unittest.main(verbosity=2)
