#!/usr/bin/python3
"""Kafka ingest end to end: featurekv-mock-kafka in its own process,
featurekv-produce and kcat producing, the server consuming (sidecar mode:
every partition assigned), and every aggregate compared with a model built
from the messages read back with kcat. Also `kafka-brokers mock`.

usage: test_kafka_ingest.py SERVER MOCK_KAFKA PRODUCE
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fkv_testlib import ServerProcess  # noqa: E402
from test_kafka_tools import MockCluster, kcat_read  # noqa: E402
import test_kafka_tools  # noqa: E402

SERVER = sys.argv[1] if len(sys.argv) > 1 else "build/server/featurekv-server"
test_kafka_tools.MOCK = sys.argv[2] if len(sys.argv) > 2 else "build/tools/featurekv-mock-kafka"
PRODUCE = sys.argv[3] if len(sys.argv) > 3 else "build/tools/featurekv-produce"
REGISTRY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "conf", "features.yaml")


def info_ingest(r):
    return r.info("ingest")


def wait_for(pred, deadline_s, what):
    end = time.time() + deadline_s
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class KafkaIngestTest(unittest.TestCase):
    def setUp(self):
        self.mock = MockCluster("--partitions", "4", "--topic", "user_events", "--topic", "dead")
        self.srv = ServerProcess(SERVER, shards=3, directives=[("registry", REGISTRY),
                                                               ("kafka-brokers", self.mock.bootstrap),
                                                               ("kafka-dlq-topic", "dead")]).start()
        self.r = self.srv.redis(decode_responses=True)

    def tearDown(self):
        self.srv.stop()
        self.mock.kill()

    def produce(self, count, seed):
        p = subprocess.run([PRODUCE, "--brokers", self.mock.bootstrap, "--count", str(count), "--rate", "0",
                            "--users", "60", "--products", "25", "--seed", str(seed)],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)

    def kcat_produce(self, lines):
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            f.write("\n".join(lines) + "\n")
            path = f.name
        try:
            p = subprocess.run(["kcat", "-b", self.mock.bootstrap, "-P", "-t", "user_events", "-l", path],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
        finally:
            os.unlink(path)

    def wait_applied(self, applied, rejected=0):
        wait_for(lambda: int(info_ingest(self.r)["events_applied"]) >= applied
                 and int(info_ingest(self.r)["events_rejected"]) >= rejected, 60, "%d events applied" % applied)
        wait_for(lambda: int(info_ingest(self.r)["kafka_lag"]) == 0, 30, "kafka_lag 0")
        info = info_ingest(self.r)
        self.assertEqual(int(info["events_applied"]), applied)
        self.assertEqual(int(info["events_rejected"]), rejected)
        return info

    def test_every_aggregate_matches_the_model_of_the_consumed_messages(self):
        now = int(time.time())
        self.produce(3000, seed=11)
        extra = ['{"user_id":%d,"product_id":%d,"action":"%s","timestamp":%d}' % (i % 60, i % 25, a, now - i % 300)
                 for i, a in zip(range(400), ["click", "purchase", "view", "add_to_cart"] * 100)]
        self.kcat_produce(extra)
        info = self.wait_applied(3400)
        for p in range(4):
            self.assertIn("partition_user_events_%d" % p, info)
        events = [json.loads(l.split(" ", 2)[2]) for l in kcat_read(self.mock.bootstrap, "user_events", 3400)]
        self.assertEqual(len(events), 3400)
        users, products = {}, {}
        for e in events:
            u = users.setdefault(e["user_id"], {"clicks": 0, "purchases": 0, "products": set()})
            u["clicks"] += e["action"] == "click"
            u["purchases"] += e["action"] == "purchase"
            u["products"].add(e["product_id"])
            p = products.setdefault(e["product_id"], {"views": 0, "purchases": 0, "buyers": set()})
            p["views"] += e["action"] == "view"
            p["purchases"] += e["action"] == "purchase"
            if e["action"] == "purchase":
                p["buyers"].add(e["user_id"])
        ukeys = sorted(users)
        got = self.r.execute_command("FMGET", *["user:%d" % u for u in ukeys], "FEATURES",
                                     "clicks_1h", "purchases_24h", "products_1h")
        for u, row in zip(ukeys, got):
            m = users[u]
            self.assertEqual(row, [m["clicks"], m["purchases"], len(m["products"])], "user:%d" % u)
        pkeys = sorted(products)
        got = self.r.execute_command("FMGET", *["product:%d" % p for p in pkeys], "FEATURES",
                                     "views_1h", "purchases_1h", "buyers_24h")
        for p, row in zip(pkeys, got):
            m = products[p]
            self.assertEqual(row, [m["views"], m["purchases"], len(m["buyers"])], "product:%d" % p)
        self.assertEqual(int(info["kafka_messages"]), 3400)

    def test_malformed_messages_are_counted_and_never_stop_ingest(self):
        now = int(time.time())
        lines = []
        for i in range(300):
            if i % 3 == 0:
                lines.append("not json %d" % i)
            elif i % 3 == 1:
                lines.append('{"product_id":1,"action":"view","timestamp":%d}' % now)  # user view skips, product applies
            else:
                lines.append('{"user_id":%d,"product_id":2,"action":"click","timestamp":%d}' % (i, now))
        self.kcat_produce(lines)
        self.produce(500, seed=5)  # good ones after the bad ones
        info = self.wait_applied(200 + 500, rejected=100)
        self.assertEqual(int(info["rejected_invalid_json"]), 100)
        self.assertEqual(int(info["view_skipped_user_activity_missing_key"]), 100)
        self.assertGreaterEqual(int(self.r.execute_command("FGET", "product:1", "views_1h")[0]), 100)
        # Every rejected message is on the dead-letter topic, with its reason in a header.
        out = subprocess.run(["kcat", "-b", self.mock.bootstrap, "-C", "-t", "dead", "-o", "beginning", "-c", "100",
                              "-q", "-f", "%h|%s\\n"], capture_output=True, text=True, timeout=60)
        dead = [l for l in out.stdout.splitlines() if l]
        self.assertEqual(len(dead), 100)
        self.assertEqual(sorted(l.split("|", 1)[1] for l in dead), sorted("not json %d" % i for i in range(0, 300, 3)))
        for l in dead:
            headers = dict(h.split("=", 1) for h in l.split("|", 1)[0].split(","))
            self.assertEqual(headers["featurekv-reason"], "invalid_json")
            self.assertEqual(headers["featurekv-topic"], "user_events")
        wait_for(lambda: int(info_ingest(self.r)["kafka_dead_lettered"]) == 100, 30, "100 dead-lettered")
        # The first rejected events are kept for FINGEST ERRORS.
        samples = self.r.execute_command("FINGEST", "ERRORS")
        self.assertEqual(len(samples), 32)
        first = dict(zip(samples[0][::2], samples[0][1::2]))
        self.assertEqual(first["reason"], "invalid_json")
        self.assertTrue(first["payload"].startswith("not json"))
        self.assertTrue(first["origin"].startswith("user_events/"))

    def test_event_to_servable_delay_is_reported(self):
        self.produce(200, seed=9)
        info = self.wait_applied(200)
        p50, p99 = float(info["e2s_delay_p50_ms"]), float(info["e2s_delay_p99_ms"])
        self.assertGreaterEqual(p99, p50)
        self.assertLess(p99, 10000)


class MockBrokersTest(unittest.TestCase):
    def test_kafka_brokers_mock_runs_the_cluster_inside_the_server(self):
        srv = ServerProcess(SERVER, shards=2, directives=[("registry", REGISTRY), ("kafka-brokers", "mock")]).start()
        try:
            r = srv.redis(decode_responses=True)
            bootstrap = info_ingest(r)["kafka_bootstrap"]
            self.assertTrue(bootstrap.startswith("127.0.0.1:"), bootstrap)
            p = subprocess.run([PRODUCE, "--brokers", bootstrap, "--count", "1000", "--rate", "0"],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            wait_for(lambda: int(info_ingest(r)["events_applied"]) == 1000, 60, "1000 events applied")
        finally:
            srv.stop()  # asserts a clean exit


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=1)
