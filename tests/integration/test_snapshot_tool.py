#!/usr/bin/python3
"""featurekv-snapshot on snapshots written by a real featurekv-server.

usage: test_snapshot_tool.py SERVER_BINARY SNAPSHOT_TOOL [unittest args]

- SummaryTest (1 and 3 shards, conf/features.yaml): strings (some with a
  TTL, one that expires before the tool runs), hashes, thousands of keys
  (several RECORDS frames per shard) and a seeded FEVENT clickstream, then
  SAVE. The tool's --json summary matches what was written: the header
  (registry version as FREGISTRY VERSION says, shards, cut time as LASTSAVE
  says), records per type and per shard (each key's shard is found through
  the SCAN cursor, whose low 8 bits are the shard), entities, aggregation
  states, tiles and last values per view (from a model of the events and the
  resolutions FINFO reports), no Kafka positions; the text output says the
  same.
- DamagedFileTest: a flipped byte, a truncated copy, another format
  version, an empty file, a missing file: exit 1 with the reason (file,
  frame, byte offset) on standard error and nothing on standard output.
- EncryptedTest: a server with snapshot-encryption-key-file, SAVE: the
  file holds none of the keys or values in the clear; the tool reads it with
  --key-file (the summary names the key and counts the same records), and
  refuses it without a key, with another key, or with a byte altered, each
  with the reason; the key rotates by CONFIG SET: the next SAVE names the
  new key, and a restart with only the new key loads it.
- UsageTest: no file, an unknown option, two files: exit 2 with the usage.

Everything is on 127.0.0.1; every wait has a deadline.
"""
import calendar
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fkv_testlib import ServerProcess, wait_until  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SERVER = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "server", "featurekv-server")
TOOL = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "build", "tools", "featurekv-snapshot")
REGISTRY = os.path.join(ROOT, "conf", "features.yaml")
ACTIONS = ["click", "view", "view", "view", "click", "add_to_cart", "purchase"]

# conf/features.yaml: view -> (entity key field, [(aggregation, kind, predicate)]).
VIEWS = {
    "user_activity": ("user", "user_id", [
        ("clicks", "count", lambda e: e["action"] == "click"),
        ("purchases", "count", lambda e: e["action"] == "purchase"),
        ("products", "count_distinct", lambda e: True),
        ("last_action", "last", lambda e: True),
        ("recent_products", "last_n", lambda e: True),
    ]),
    "product_popularity": ("product", "product_id", [
        ("views", "count", lambda e: e["action"] == "view"),
        ("purchases", "count", lambda e: e["action"] == "purchase"),
        ("buyers", "count_distinct", lambda e: e["action"] == "purchase"),
    ]),
}
LAST_N = {"recent_products": 10}


def run_tool(*args, timeout=60):
    return subprocess.run([TOOL] + list(args), capture_output=True, text=True, timeout=timeout)


def flat_map(v):
    """A RESP2 map (flat [k, v, ...] list) as a dict."""
    return dict(zip(v[0::2], v[1::2]))


def iso_ms(text):
    """Milliseconds of '2024-05-01T12:00:00.123Z'."""
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z", text)
    assert m, text
    y, mo, d, h, mi, s, ms = (int(x) for x in m.groups())
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1000 + ms


class SummaryTest(unittest.TestCase):
    shards = 3

    @classmethod
    def setUpClass(cls):
        cls.data = tempfile.mkdtemp(prefix="fkv-snaptool-")
        cls.server = ServerProcess(SERVER, shards=cls.shards, data_dir=cls.data,
                                   directives=[("registry", REGISTRY)]).start()
        cls.r = cls.server.redis(decode_responses=True)
        cls.write_content()
        cls.key_shard, cls.key_type, cls.key_ttl = cls.keyspace()  # nothing changes until the SAVE
        before = int(time.time() * 1000)
        assert cls.r.save()
        after = int(time.time() * 1000)
        assert after < cls.short_expiry, "too slow: the short-lived key expired before the SAVE"
        cls.save_window = (before, after)
        cls.path = os.path.join(cls.data, "featurekv.snap")
        cls.snapshot = os.path.join(cls.data, "copy.snap")  # the server overwrites its file on SIGTERM
        shutil.copyfile(cls.path, cls.snapshot)
        cls.lastsave = cls.r.lastsave()
        cls.registry_version = cls.r.execute_command("FREGISTRY", "VERSION")
        cls.resolutions = {}
        for view in VIEWS:
            info = flat_map(cls.r.execute_command("FINFO", view))
            for a in info["aggregations"]:
                a = flat_map(a)
                cls.resolutions[(view, a["name"])] = int(a.get("resolution_ms") or 0)
        # Let the short-lived key expire: the summary counts it as expired by now.
        wait_until(lambda: int(time.time() * 1000) > cls.short_expiry + 50, timeout=15, what="the short TTL")

    @classmethod
    def tearDownClass(cls):
        cls.r.close()
        cls.server.stop()
        shutil.rmtree(cls.data, ignore_errors=True)

    @classmethod
    def write_content(cls):
        rng = random.Random(1234 + cls.shards)
        r = cls.r
        p = r.pipeline(transaction=False)
        for i in range(12000):  # ~1.3 MB of records: several RECORDS frames per shard
            p.set("bulk:%d" % i, "v" * 100)
        for i in range(30):
            p.set("ttl:%d" % i, "x", ex=3600 + i)
        for i in range(20):
            p.hset("hash:%d" % i, mapping={"f%d" % j: str(j) for j in range(1 + (i % 3) * 40)})
            if i % 2:
                p.expire("hash:%d" % i, 7200)
        p.execute()
        now = int(time.time())
        cls.events = []
        for _ in range(300):
            e = {"user_id": rng.randrange(1, 25), "product_id": rng.randrange(1, 20), "action": rng.choice(ACTIONS),
                 "timestamp": now - rng.randrange(0, 900)}
            cls.events.append(e)
        for i in range(0, len(cls.events), 50):
            accepted = r.execute_command("FEVENT", "user_events", *[json.dumps(e) for e in cls.events[i:i + 50]])
            assert accepted == 50, accepted
        cls.short_expiry = int(time.time() * 1000) + 5000  # expires after the SAVE, before the tool runs
        r.set("short", "gone soon", px=5000)

    @classmethod
    def keyspace(cls):
        """key -> shard (from the SCAN cursor's low 8 bits), type and PTTL."""
        shard_of = {}
        cursor, calls = 0, 0
        while True:
            calls += 1
            assert calls < 100000
            nxt, keys = cls.r.scan(cursor, count=1000)
            for k in keys:
                shard_of[k] = cursor & 0xff
            cursor = int(nxt)
            if cursor == 0:
                break
        names = sorted(shard_of)
        p = cls.r.pipeline(transaction=False)
        for k in names:
            p.type(k)
            p.pttl(k)
        out = p.execute()
        types = dict(zip(names, out[0::2]))
        ttls = dict(zip(names, out[1::2]))
        return shard_of, types, ttls

    def tool_json(self):
        p = run_tool("--json", self.snapshot)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")
        return json.loads(p.stdout)

    def expected_shards(self):
        want = [{"shard": i, "records": 0, "strings": 0, "hashes": 0, "features": 0, "expiring": 0}
                for i in range(self.shards)]
        names = {"string": "strings", "hash": "hashes", "feature": "features"}
        for k, s in self.key_shard.items():
            want[s]["records"] += 1
            want[s][names[self.key_type[k]]] += 1
            want[s]["expiring"] += self.key_ttl[k] > 0 or k == "short"
        return want

    def expected_views(self):
        """Per view: entities, aggregation states, tiles and last values."""
        state = defaultdict(lambda: defaultdict(list))  # (view, entity) -> aggregation -> events
        for e in self.events:
            for view, (entity, field, aggs) in VIEWS.items():
                matched = [a for a in aggs if a[2](e)]
                for name, _, _ in matched:
                    state[(view, "%s:%s" % (entity, e[field]))][name].append(e)
        out = {v: {"entities": 0, "aggregations": 0, "tiles": 0, "last_values": 0} for v in VIEWS}
        for (view, _), aggs in state.items():
            o = out[view]
            o["entities"] += 1
            o["aggregations"] += len(aggs)
            kinds = {a[0]: a[1] for a in VIEWS[view][2]}
            for name, evs in aggs.items():
                if kinds[name] in ("last", "last_n"):
                    o["last_values"] += min(len(evs), LAST_N.get(name, 1))
                else:
                    res = self.resolutions[(view, name)]
                    o["tiles"] += len({e["timestamp"] * 1000 // res for e in evs})
        return out

    def test_header(self):
        s = self.tool_json()
        self.assertTrue(s["ok"])
        self.assertEqual(s["file"], self.snapshot)
        self.assertEqual(s["size"], os.path.getsize(self.snapshot))
        self.assertEqual(s["format_version"], 2)
        self.assertEqual(s["sections"], self.shards)
        self.assertEqual(s["registry_version"], self.registry_version)
        self.assertRegex(s["server_version"], r"^\d+\.\d+\.\d+")
        lo, hi = self.save_window
        self.assertLessEqual(lo, s["created_ms"])
        self.assertLessEqual(s["created_ms"], s["cut_ms"])
        self.assertLessEqual(s["cut_ms"], hi)
        self.assertEqual(s["cut_ms"] // 1000, int(self.lastsave.timestamp()))  # LASTSAVE: the cut
        self.assertEqual(iso_ms(s["created"]), s["created_ms"])
        self.assertEqual(iso_ms(s["cut"]), s["cut_ms"])
        self.assertEqual(s["kafka"], [])
        self.assertGreater(s["frames"], 3 + 2 * self.shards + 1, "expected several RECORDS frames per shard")

    def test_counts_per_shard(self):
        s = self.tool_json()
        self.assertEqual(s["records"], len(self.key_shard))
        got = [{k: v for k, v in sh.items() if k != "bytes"} for sh in s["shards"]]
        self.assertEqual(got, self.expected_shards())
        self.assertEqual(s["expired_now"], 1)  # "short"
        for sh in s["shards"]:
            self.assertGreater(sh["bytes"], 100 * sh["strings"])

    def test_counts_per_view(self):
        s = self.tool_json()
        by_name = {v["name"]: v for v in s["views"]}
        self.assertEqual(set(by_name), set(VIEWS))
        want = self.expected_views()
        for view, (_, _, aggs) in VIEWS.items():
            v = by_name[view]
            self.assertRegex(v["id"], r"^[0-9a-f]{16}$")
            self.assertEqual(v["defined"], len(aggs))
            self.assertEqual(v["sketches"], 0)
            got = {k: v[k] for k in ("entities", "aggregations", "tiles", "last_values")}
            self.assertEqual(got, want[view], view)
        features = sum(sh["features"] for sh in s["shards"])
        self.assertEqual(features, sum(w["entities"] for w in want.values()))

    def test_text_says_the_same(self):
        s = self.tool_json()
        p = run_tool(self.snapshot)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout
        self.assertIn("%s: OK" % self.snapshot, out)
        self.assertIn("format version 2", out)
        self.assertIn("registry version: %s" % self.registry_version, out)
        self.assertIn("cut:              %s (%d ms)" % (s["cut"], s["cut_ms"]), out)
        self.assertIn("created:          %s (%d ms)" % (s["created"], s["created_ms"]), out)
        self.assertIn("sections:         %d" % self.shards, out)
        self.assertIn("kafka positions:  none", out)
        self.assertRegex(out, r"records: +%d: " % s["records"])
        rows = re.findall(r"^  (\d+) +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +(\d+)$", out, re.M)
        self.assertEqual([[int(x) for x in row] for row in rows],
                         [[sh[k] for k in ("shard", "records", "strings", "hashes", "features", "expiring", "bytes")]
                          for sh in s["shards"]])
        for v in s["views"]:
            m = re.search(r"^  %s +%s +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +(\d+)$" % (v["name"], v["id"]), out, re.M)
            self.assertIsNotNone(m, out)
            self.assertEqual([int(x) for x in m.groups()],
                             [v[k] for k in ("defined", "entities", "aggregations", "tiles", "sketches",
                                             "last_values")])


class OneShardSummaryTest(SummaryTest):
    shards = 1


class DamagedFileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.data = tempfile.mkdtemp(prefix="fkv-snaptool-bad-")
        server = ServerProcess(SERVER, shards=2, data_dir=cls.data, directives=[("registry", REGISTRY)]).start()
        try:
            r = server.redis()
            for i in range(200):
                r.set("k%d" % i, "v%d" % i)
            r.hset("h", mapping={"a": "1"})
            r.execute_command("FEVENT", "user_events", json.dumps(
                {"user_id": 1, "product_id": 2, "action": "click", "timestamp": int(time.time())}))
            assert r.save()
            r.close()
            cls.good = os.path.join(cls.data, "good.snap")
            shutil.copyfile(os.path.join(cls.data, "featurekv.snap"), cls.good)
        finally:
            server.stop()
        with open(cls.good, "rb") as f:
            cls.bytes = f.read()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.data, ignore_errors=True)

    def write(self, name, data):
        path = os.path.join(self.data, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def refused(self, path, *reason):
        p = run_tool(path)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertEqual(p.stdout, "")
        self.assertTrue(p.stderr.startswith("featurekv-snapshot: snapshot %s: " % path), p.stderr)
        for part in reason:
            self.assertIn(part, p.stderr)
        p = run_tool("--json", path)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, "")
        return p.stderr

    def test_good_copy_verifies(self):
        self.assertEqual(run_tool(self.good).returncode, 0)

    def test_flipped_byte(self):
        for pos in (16, 40, len(self.bytes) // 2, len(self.bytes) - 3):
            data = bytearray(self.bytes)
            data[pos] ^= 0x5a
            err = self.refused(self.write("flip.snap", bytes(data)), ", byte ")
            self.assertRegex(err, r"(checksum mismatch|bad frame header|truncated)")

    def test_payload_flip_names_the_frame(self):
        # The first frame (HEADER) starts at byte 16; its payload at 32.
        data = bytearray(self.bytes)
        data[40] ^= 1
        self.refused(self.write("flip.snap", bytes(data)), "HEADER, byte 16: checksum mismatch")

    def test_truncated(self):
        for n in (16, 100, len(self.bytes) // 2, len(self.bytes) - 1):
            self.refused(self.write("cut.snap", self.bytes[:n]), "truncated")

    def test_other_version(self):
        data = bytearray(self.bytes)
        data[8:12] = (3).to_bytes(4, "little")
        self.refused(self.write("v3.snap", bytes(data)), "unsupported format version 3")

    def test_garbage_after_footer(self):
        self.refused(self.write("tail.snap", self.bytes + b"garbage"), "data after the FOOTER")

    def test_empty_and_missing(self):
        self.refused(self.write("empty.snap", b""), "not a featurekv snapshot")
        self.refused(os.path.join(self.data, "absent.snap"), "No such file")


class EncryptedTest(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="fkv-snaptool-enc-")
        self.k1 = self.key("k1.key", os.urandom(32).hex() + "\n")  # as `openssl rand -hex 32` writes it
        self.k2 = self.key("k2.key", os.urandom(32))  # 32 raw bytes
        self.server = None

    def tearDown(self):
        if self.server:
            self.server.kill()
        shutil.rmtree(self.data, ignore_errors=True)

    def key(self, name, content):
        path = os.path.join(self.data, name)
        with open(path, "w" if isinstance(content, str) else "wb") as f:
            f.write(content)
        return path

    def start(self, *keys):
        directives = [("registry", REGISTRY), ("save", "")]
        if keys:
            directives.append(("snapshot-encryption-key-file", keys[0]))
        if len(keys) > 1:
            directives.append(("snapshot-encryption-previous-key-file", keys[1]))
        self.server = ServerProcess(SERVER, shards=2, data_dir=self.data, directives=directives).start()
        return self.server.redis(decode_responses=True)

    def stop(self):
        self.server.stop()
        self.server = None

    def snap_bytes(self):
        with open(os.path.join(self.data, "featurekv.snap"), "rb") as f:
            return f.read()

    def summary(self, *keys):
        args = ["--json"]
        for k in keys:
            args += ["--key-file", k]
        p = run_tool(*args, os.path.join(self.data, "featurekv.snap"))
        return p, (json.loads(p.stdout) if p.returncode == 0 else None)

    def test_encrypted_snapshot_round_trip_rotation_and_refusals(self):
        r = self.start(self.k1)
        for i in range(3000):
            r.set("email:%d" % i, "person%d@example.com" % i)
        r.hset("profile:7", mapping={"ssn": "078-05-1120"})
        r.execute_command("FEVENT", "user_events", json.dumps(
            {"user_id": 4242, "product_id": 99, "action": "purchase", "timestamp": int(time.time())}))
        self.assertTrue(r.save())
        data = self.snap_bytes()
        for needle in (b"email:", b"@example.com", b"078-05-1120", b"profile:7", b"user:4242", b"user_activity"):
            self.assertNotIn(needle, data)
        self.assertEqual(int.from_bytes(data[12:16], "little"), 1)  # flag 1: encrypted

        p, s = self.summary(self.k1)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(s["records"], 3000 + 1 + 2)  # strings, the hash, user:4242 and product:99
        self.assertRegex(s["encryption_key"], r"^[0-9a-f]{16}$")
        text = run_tool("--key-file", self.k1, os.path.join(self.data, "featurekv.snap"))
        self.assertIn("encryption:       AES-256-GCM, key " + s["encryption_key"], text.stdout)
        # Without the key, or with another one: refused, saying which key the file needs.
        p, _ = self.summary()
        self.assertEqual(p.returncode, 1)
        self.assertIn("encrypted with key %s, but no key is configured" % s["encryption_key"], p.stderr)
        p, _ = self.summary(self.k2)
        self.assertEqual(p.returncode, 1)
        self.assertIn("which is not among the keys given", p.stderr)
        # A byte altered anywhere after the header: refused.
        for pos in (40, len(data) // 2, len(data) - 20):
            bad = bytearray(data)
            bad[pos] ^= 0x04
            path = self.key("bad.snap", bytes(bad))
            p = run_tool("--key-file", self.k1, path)
            self.assertEqual(p.returncode, 1)
            self.assertRegex(p.stderr, r"(checksum mismatch|authentication failed|bad frame header|truncated)")

        # A bad key file changes nothing.
        bad_key = self.key("short.key", b"too short")
        with self.assertRaises(Exception) as cm:
            r.config_set("snapshot-encryption-key-file", bad_key)
        self.assertIn("32 bytes or 64 hexadecimal digits", str(cm.exception))
        self.assertEqual(r.config_get("snapshot-encryption-key-file")["snapshot-encryption-key-file"], self.k1)
        # Rotation: CONFIG SET the new key; the next SAVE uses it.
        r.config_set("snapshot-encryption-key-file", self.k2)
        self.assertTrue(r.save())
        p, s2 = self.summary(self.k2)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotEqual(s2["encryption_key"], s["encryption_key"])
        self.stop()
        # A restart with only the new key loads everything.
        r = self.start(self.k2)
        self.assertEqual(r.dbsize(), 3003)
        self.assertEqual(r.hget("profile:7", "ssn"), "078-05-1120")
        self.stop()

        # Crash between the rotation and the next save: the file still
        # names the old key, which the previous-key directive supplies.
        os.replace(self.key("old.snap", data), os.path.join(self.data, "featurekv.snap"))
        msg = ""
        try:
            self.start(self.k2)
        except Exception as e:  # ServerError: the start is refused
            msg = str(e)
        self.server = None
        self.assertIn("not among the keys given", msg)
        r = self.start(self.k2, self.k1)
        self.assertEqual(r.get("email:2999"), "person2999@example.com")
        # Turning encryption off: the next snapshot is plain again.
        r.config_set("snapshot-encryption-key-file", "")
        self.assertTrue(r.save())
        self.assertIn(b"person2999@example.com", self.snap_bytes())
        p, s3 = self.summary()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIsNone(s3["encryption_key"])


class UsageTest(unittest.TestCase):
    def usage(self, *args):
        p = run_tool(*args)
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("usage: featurekv-snapshot", p.stderr)
        self.assertEqual(p.stdout, "")
        return p.stderr

    def test_usage_errors(self):
        self.assertIn("FILE is required", self.usage())
        self.assertIn("FILE is required", self.usage("--json"))
        self.assertIn("unknown option --bogus", self.usage("--bogus", "x.snap"))
        self.assertIn("one FILE only", self.usage("a.snap", "b.snap"))
        self.assertIn("--key-file needs a file", self.usage("x.snap", "--key-file"))

    def test_help(self):
        p = run_tool("--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("usage: featurekv-snapshot", p.stdout)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]] + sys.argv[3:], verbosity=2)
