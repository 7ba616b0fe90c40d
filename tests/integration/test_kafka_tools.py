#!/usr/bin/python3
"""featurekv-mock-kafka and featurekv-produce through real Kafka clients:
the mock cluster in its own process, the producer, and kcat reading back.

usage: test_kafka_tools.py MOCK_KAFKA_BINARY PRODUCE_BINARY
"""
import json
import os
import signal
import subprocess
import sys
import time
import unittest

MOCK = sys.argv[1] if len(sys.argv) > 1 else "build/tools/featurekv-mock-kafka"
PRODUCE = sys.argv[2] if len(sys.argv) > 2 else "build/tools/featurekv-produce"
ACTIONS = {"click", "view", "add_to_cart", "purchase"}


class MockCluster:
    """Starts featurekv-mock-kafka and reads the bootstrap address (first line)."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([MOCK, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # the tool prints it at once, or exits
        if not line:
            raise RuntimeError("mock cluster printed no address: " + self.proc.stderr.read())
        self.bootstrap = line.strip()

    def command(self, line):
        """Sends a control command (down, up, topic NAME P); returns its one-line answer."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            f.close()


def kcat_read(bootstrap, topic, expect, deadline_s=60):
    """Reads the topic from the beginning until `expect` messages or the deadline."""
    out = subprocess.run(["kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-c", str(expect),
                          "-q", "-f", "%p %k %s\\n"], capture_output=True, text=True, timeout=deadline_s)
    return [l for l in out.stdout.splitlines() if l]


class MockKafkaTest(unittest.TestCase):
    def test_prints_the_bootstrap_address_first_and_stops_cleanly_on_sigterm(self):
        m = MockCluster("--brokers", "3", "--partitions", "4", "--topic", "a", "--topic", "b")
        try:
            host, _, port = m.bootstrap.split(",")[0].partition(":")
            self.assertEqual(host, "127.0.0.1")
            self.assertTrue(port.isdigit())
            meta = subprocess.run(["kcat", "-b", m.bootstrap, "-L", "-J"], capture_output=True, text=True, timeout=30)
            topics = {t["topic"]: len(t["partitions"]) for t in json.loads(meta.stdout)["topics"]}
            self.assertEqual(topics.get("a"), 4)
            self.assertEqual(topics.get("b"), 4)
            self.assertEqual(len(json.loads(meta.stdout)["brokers"]), 3)
            self.assertEqual(m.stop(), 0)
        finally:
            m.kill()

    def test_control_commands_take_the_brokers_down_and_create_topics(self):
        m = MockCluster("--partitions", "2", "--topic", "a")
        try:
            self.assertEqual(m.command("topic fresh 3"), "ok")
            meta = subprocess.run(["kcat", "-b", m.bootstrap, "-L", "-J"], capture_output=True, text=True, timeout=30)
            topics = {t["topic"]: len(t["partitions"]) for t in json.loads(meta.stdout)["topics"]}
            self.assertEqual(topics.get("fresh"), 3)
            self.assertEqual(m.command("down"), "ok")
            down = subprocess.run(["kcat", "-b", m.bootstrap, "-L", "-m", "2"], capture_output=True, text=True,
                                  timeout=30)
            self.assertNotEqual(down.returncode, 0)  # no broker answers metadata while down
            self.assertEqual(m.command("up"), "ok")
            up = subprocess.run(["kcat", "-b", m.bootstrap, "-L", "-m", "10"], capture_output=True, text=True,
                                timeout=30)
            self.assertEqual(up.returncode, 0, up.stderr)
            self.assertTrue(m.command("bogus").startswith("error: unknown command 'bogus'"))
            self.assertTrue(m.command("topic x").startswith("error: usage"))
        finally:
            m.kill()

    def test_refuses_bad_options(self):
        for args in (["--brokers", "0"], ["--partitions", "x"], ["--nosuch", "1"], ["--topic"]):
            p = subprocess.run([MOCK, *args], capture_output=True, text=True, timeout=20)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn("usage", p.stderr)


class ProduceTest(unittest.TestCase):
    def setUp(self):
        self.m = MockCluster("--partitions", "4", "--topic", "user_events")

    def tearDown(self):
        self.m.kill()

    def test_produces_the_clickstream_keyed_by_user(self):
        p = subprocess.run([PRODUCE, "--brokers", self.m.bootstrap, "--count", "3000", "--rate", "0",
                            "--users", "40", "--products", "9", "--seed", "7"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("3000 sent, 3000 delivered, 0 failed", p.stderr)
        lines = kcat_read(self.m.bootstrap, "user_events", 3000)
        self.assertEqual(len(lines), 3000)
        partitions_of_user = {}
        now = time.time()
        for line in lines:
            part, key, value = line.split(" ", 2)
            ev = json.loads(value)
            self.assertEqual(set(ev), {"user_id", "product_id", "action", "timestamp"})
            self.assertEqual(key, str(ev["user_id"]))
            self.assertLess(ev["user_id"], 40)
            self.assertLess(ev["product_id"], 9)
            self.assertIn(ev["action"], ACTIONS)
            self.assertLess(abs(ev["timestamp"] - now), 120)  # seconds, near now
            partitions_of_user.setdefault(key, set()).add(part)
        # keyed: all events of a user land in one partition
        self.assertTrue(all(len(ps) == 1 for ps in partitions_of_user.values()))
        self.assertGreater(len({p for ps in partitions_of_user.values() for p in ps}), 1)

    def test_rate_limits_the_stream(self):
        t0 = time.monotonic()
        p = subprocess.run([PRODUCE, "--brokers", self.m.bootstrap, "--count", "300", "--rate", "1000"],
                           capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - t0
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertGreaterEqual(elapsed, 0.25)  # 300 events at 1000/s cannot take less than 0.3 s

    def test_unit_ms_writes_millisecond_timestamps(self):
        p = subprocess.run([PRODUCE, "--brokers", self.m.bootstrap, "--count", "10", "--rate", "0", "--unit", "ms"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        for line in kcat_read(self.m.bootstrap, "user_events", 10):
            ts = json.loads(line.split(" ", 2)[2])["timestamp"]
            self.assertLess(abs(ts - time.time() * 1000), 120000)

    def test_refuses_bad_options(self):
        for args in ([], ["--brokers", self.m.bootstrap, "--unit", "h"], ["--brokers", self.m.bootstrap, "--users", "0"],
                     ["--brokers", self.m.bootstrap, "--rate", "fast"]):
            p = subprocess.run([PRODUCE, *args], capture_output=True, text=True, timeout=20)
            self.assertEqual(p.returncode, 2, args)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=1)
