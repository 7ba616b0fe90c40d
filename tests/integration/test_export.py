#!/usr/bin/python3
"""featurekv-export against a real featurekv-server.

usage: test_export.py SERVER_BINARY EXPORT_BINARY [unittest args]

- TrainingSetTest: 2,000 events of 40 users over the last 50 minutes, then
  a CSV of 600 rows (users known and unknown, timestamps past and present,
  runs of rows sharing one timestamp, ISO 8601 and millisecond times,
  labels with commas, quotes and newlines). Every exported value equals the
  serving value, FGET ... AT of the row's timestamp, and the counts also a
  brute-force count of the events; the labels come back unchanged; the
  export from the server's snapshot file (--snapshot) is byte for byte the
  export from the server; --entity prefixes ids.
- FailureTest: a bad timestamp, an unterminated quote, an unknown feature,
  a refused connection: exit 1, the line or the server's error named, and
  no output file; usage errors exit 2.

Timestamps are placed before `now0` and the queries use AT, so no window
moves while the test runs. Everything is on 127.0.0.1; every wait has a
deadline.
"""
import csv
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import shutil
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fkv_testlib import ServerProcess  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SERVER = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "server", "featurekv-server")
EXPORT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "build", "tools", "featurekv-export")

REGISTRY = """\
sources:
  ev:
    topic: ev
    timestamp: {field: ts, unit: ms}
entities:
  user: {key: uid}
views:
  act:
    entity: user
    source: ev
    ttl: 1d
    features:
      clicks: {agg: count, where: "action == 'click'", windows: [5m, 1h], resolution: 1m}
      spend: {agg: sum, field: price, windows: [1h], resolution: 1m}
      lat: {agg: quantile, field: price, q: [0.5, 0.9], windows: [30m], resolution: 1m}
      last_action: {agg: last, field: action}
      recent: {agg: last_n, field: item, n: 3}
  act@2:
    entity: user
    source: ev
    ttl: 1d
    features:
      clicks: {agg: count, where: "action != 'buy'", windows: [5m, 1h], resolution: 1m}
"""
FEATURES = ["clicks_5m", "clicks_1h", "spend_1h", "lat_p50_30m", "lat_p90_30m", "last_action", "recent"]


def as_field(v):
    """A redis-py RESP2 value as featurekv-export writes it."""
    if v is None:
        return ""
    if isinstance(v, list):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def iso(ms):
    t = time.gmtime(ms // 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + ".%03dZ" % (ms % 1000)


class ExportCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fkv-export-")
        cls.reg = os.path.join(cls.tmp, "features.yaml")
        with open(cls.reg, "w") as f:
            f.write(REGISTRY)
        cls.server = ServerProcess(SERVER, data_dir=cls.tmp, directives=[("registry", cls.reg), ("save", "")]).start()
        cls.r = cls.server.redis()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def export(self, csv_text, *args, out="out.csv"):
        src = os.path.join(self.tmp, "entities.csv")
        with open(src, "w", newline="", encoding="utf-8") as f:
            f.write(csv_text)
        dst = os.path.join(self.tmp, out)
        if os.path.exists(dst):
            os.remove(dst)
        argv = [EXPORT, "--entities", src, "--features", ",".join(FEATURES), "--out", dst]
        if "--snapshot" not in args:
            argv += ["--port", str(self.server.port)]
        p = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=120)
        return p, dst


class TrainingSetTest(ExportCase):
    def test_rows_equal_the_serving_values_at_their_time_and_the_snapshot_export(self):
        rnd = random.Random(20261202)
        now0 = int(time.time() * 1000)
        users = ["u%d" % i for i in range(40)]
        events = []
        for _ in range(2000):
            events.append({"uid": rnd.choice(users), "ts": now0 - rnd.randrange(50 * 60000),
                           "action": rnd.choice(["click", "view", "buy"]), "price": rnd.choice([1, 2.5, 10, 99.99]),
                           "item": "i%d" % rnd.randrange(30)})
        texts = [json.dumps(e) for e in events]
        for i in range(0, len(texts), 200):
            self.assertEqual(self.r.execute_command("FEVENT", "ev", *texts[i:i + 200]), len(texts[i:i + 200]))

        rows = []
        while len(rows) < 600:
            ts = now0 - rnd.randrange(55 * 60000)
            for _ in range(rnd.choice([1, 1, 1, 5])):  # runs that share a timestamp
                uid = rnd.choice(users + ["nobody"])
                label = rnd.choice(["0", "1", "a,b", 'say "hi"', "two\nlines", ""])
                rows.append(("user:" + uid, ts, label))
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\r\n")
        w.writerow(["entity", "event_timestamp", "label"])
        for k, (key, ts, label) in enumerate(rows):
            w.writerow([key, iso(ts) if k % 3 == 0 else str(ts), label])
        csv_text = out.getvalue() + "\r\n"  # a blank last line is skipped
        p, dst = self.export(csv_text)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stderr, r"featurekv-export: done: 600 rows, 7 features")
        with open(dst, newline="") as f:
            got = list(csv.reader(f))
        self.assertEqual(got[0], ["entity", "event_timestamp", "label"] + FEATURES)
        self.assertEqual(len(got), 601)
        pipe = self.r.pipeline(transaction=False)
        for key, ts, _ in rows:
            pipe.execute_command("FGET", key, *FEATURES, "AT", ts)
        serving = pipe.execute()
        for k, ((key, ts, label), row, want) in enumerate(zip(rows, got[1:], serving)):
            self.assertEqual(row[0], key)
            self.assertEqual(row[2], label)  # commas, quotes and newlines survive
            self.assertEqual(row[3:], [as_field(v) for v in want], "row %d: %s AT %d" % (k + 1, key, ts))
            # The counts against the events themselves (1-minute tiles).
            uid = key.split(":", 1)[1]
            for name, w_ms in (("clicks_5m", 300000), ("clicks_1h", 3600000)):
                n = sum(1 for e in events if e["uid"] == uid and e["action"] == "click" and
                        ts - w_ms < e["ts"] // 60000 * 60000 <= ts)
                self.assertEqual(row[3 + FEATURES.index(name)], str(n) if uid != "nobody" else "", (k, name))
        self.assertTrue(any(r[3 + FEATURES.index("recent")].startswith("[") for r in got[1:]))

        # The same rows from the snapshot file: the same bytes.
        self.assertTrue(self.r.save())
        p2, dst2 = self.export(csv_text, "--snapshot", os.path.join(self.tmp, "featurekv.snap"), "--registry",
                               self.reg, out="snap.csv")
        self.assertEqual(p2.returncode, 0, p2.stderr)
        with open(dst, "rb") as a, open(dst2, "rb") as b:
            self.assertEqual(a.read(), b.read())

        # A default moved to version 2 (FREGISTRY DEFAULT, kept in the
        # snapshot): both exports read version 2's clicks.
        two = ["clicks_5m", "clicks_1h"]
        self.assertEqual(self.r.execute_command("FREGISTRY", "DEFAULT", "act", "2"), "OK")
        p4, dst4 = self.export(csv_text, "--features", ",".join(two), out="v2.csv")
        self.assertEqual(p4.returncode, 0, p4.stderr)
        self.assertTrue(self.r.save())
        p5, dst5 = self.export(csv_text, "--features", ",".join(two), "--snapshot",
                               os.path.join(self.tmp, "featurekv.snap"), "--registry", self.reg, out="v2snap.csv")
        self.assertEqual(p5.returncode, 0, p5.stderr)
        with open(dst4, "rb") as a, open(dst5, "rb") as b, open(dst, "rb") as c:
            v2_bytes = a.read()
            self.assertEqual(v2_bytes, b.read())
            self.assertNotEqual(v2_bytes.split(b"\n")[1:], c.read().split(b"\n")[1:])
        self.assertEqual(self.r.execute_command("FREGISTRY", "DEFAULT", "act", "1"), "OK")
        # ISO 8601 with an offset, and a UTF-8 byte order mark before the header.
        p6, dst6 = self.export("\ufeffkey,ts\nuser:u1,%s\nuser:u1,%d\n" % (
            time.strftime("%Y-%m-%dT%H:%M:%S+05:30", time.gmtime(now0 // 1000 + 19800)), now0 // 1000 * 1000),
            out="iso.csv")
        self.assertEqual(p6.returncode, 0, p6.stderr)
        with open(dst6, newline="", encoding="utf-8") as f:
            iso_rows = list(csv.reader(f))
        self.assertEqual(iso_rows[0][:2], ["key", "ts"])
        self.assertEqual(iso_rows[1][2:], iso_rows[2][2:])

        # --entity: the first column holds ids.
        p3, dst3 = self.export("id,ts\nu1,%d\n" % now0, "--entity", "user", out="ids.csv")
        self.assertEqual(p3.returncode, 0, p3.stderr)
        with open(dst3, newline="") as f:
            ids = list(csv.reader(f))
        self.assertEqual(ids[1][2:], [as_field(v) for v in self.r.execute_command("FGET", "user:u1", *FEATURES,
                                                                                  "AT", now0)])


class FailureTest(ExportCase):
    def assertFails(self, csv_text, words, *args, code=1):
        p, dst = self.export(csv_text, *args)
        self.assertEqual(p.returncode, code, p.stderr)
        self.assertIn(words, p.stderr)
        self.assertFalse(os.path.exists(dst))
        self.assertFalse(os.path.exists(dst + ".tmp"))

    def test_bad_input_and_server_errors_stop_without_an_output_file(self):
        good = "key,ts\nuser:u1,1000\n"
        self.assertFails(good + "user:u1,yesterday\n", "entities.csv:3: bad timestamp 'yesterday'")
        self.assertFails(good + "user:u1,2026-13-01T00:00:00Z\n", "entities.csv:3: bad timestamp")
        self.assertFails(good + "user:u1,2026-02-30T00:00:00Z\n", "entities.csv:3: bad timestamp")
        self.assertFails(good + "user:u1,2026-02-01T-1:00:00Z\n", "entities.csv:3: bad timestamp")
        self.assertFails(good + "user:u1,2026-02-01T10:00:00.Z\n", "entities.csv:3: bad timestamp")
        # A key holding a string: WRONGTYPE, from the server and from a snapshot.
        self.r.set("user:plain", "x")
        self.assertFails(good + "user:plain,1000\n", "row with key user:plain: WRONGTYPE")
        self.assertTrue(self.r.save())
        self.assertFails(good + "user:plain,1000\n", "row with key user:plain: WRONGTYPE", "--snapshot",
                         os.path.join(self.tmp, "featurekv.snap"), "--registry", self.reg)
        self.r.delete("user:plain")
        self.assertFails(good + 'user:u1,1000,"open\n', "entities.csv:3: unterminated quoted field")
        self.assertFails(good + "user:u1\n", "entities.csv:3: needs an entity key and a timestamp")
        self.assertFails(good, "ERR unknown feature 'nope' for entity 'user'", "--features", "nope")
        port = self.server.port
        self.server.port = 1  # nothing listens on port 1 here
        try:
            self.assertFails(good, "cannot connect to 127.0.0.1:1")
        finally:
            self.server.port = port
        self.assertFails(good, "--snapshot needs --registry", "--snapshot", "x.snap", code=2)
        self.assertFails(good, "missing.snap: No such file or directory", "--snapshot", os.path.join(self.tmp, "missing.snap"), "--registry",
                         self.reg)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]] + sys.argv[3:])
