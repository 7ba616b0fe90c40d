#!/usr/bin/python3
"""Snapshots and exactly-once recovery through real processes: the crash loop
(kill -9 during Kafka ingest, restart, compare with a server that never
crashed and with the reference model), round trips, refusal of corrupt
files with fallback, a failing disk, registry changes between save and load,
SHUTDOWN / SIGTERM saves, and offsets committed to the group only after a
durable snapshot.

usage: test_snapshots.py SERVER MOCK_KAFKA PRODUCE [unittest args]
"""
import json
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fkv_testlib import ServerError, ServerProcess  # noqa: E402
from test_kafka_tools import MockCluster  # noqa: E402
import test_kafka_tools  # noqa: E402

SERVER = sys.argv[1] if len(sys.argv) > 1 else "build/server/featurekv-server"
test_kafka_tools.MOCK = sys.argv[2] if len(sys.argv) > 2 else "build/tools/featurekv-mock-kafka"
PRODUCE = sys.argv[3] if len(sys.argv) > 3 else "build/tools/featurekv-produce"
REGISTRY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "conf", "features.yaml")
SNAP = "featurekv.snap"

USER_FEATURES = ["clicks_1m", "clicks_5m", "clicks_1h", "purchases_1h", "purchases_24h", "products_1h",
                 "last_action", "recent_products"]
PRODUCT_FEATURES = ["views_5m", "views_1h", "purchases_1h", "buyers_24h"]


def wait_for(pred, deadline_s, what, interval=0.05):
    end = time.time() + deadline_s
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out waiting for " + what)


def partitions(r, info=None):
    """{partition: (position, high)} of user_events from INFO ingest."""
    out = {}
    for k, v in (info or r.info("ingest")).items():
        if k.startswith("partition_user_events_"):
            f = v if isinstance(v, dict) else dict(kv.split("=") for kv in v.split(","))
            out[int(k.rsplit("_", 1)[1])] = (int(f["position"]), int(f["high"]))
    return out


def caught_up(r, nparts, total):
    """Every event consumed and applied (nothing in flight to the shards)."""
    info = r.info("ingest")
    p = partitions(r, info)
    return (len(p) == nparts and all(pos == high for pos, high in p.values())
            and sum(high for _, high in p.values()) == total and int(info["kafka_batches_in_flight"]) == 0)


def save_now(r, deadline_s=60):
    """A SAVE that starts after this call: with save rules a BGSAVE may be
    running (SAVE then answers "Background save already in progress", as in
    Redis), so wait for it to end and ask again."""
    end = time.time() + deadline_s
    while True:
        try:
            return r.save()
        except Exception as e:
            if "already in progress" not in str(e) or time.time() > end:
                raise
            time.sleep(0.02)


def frames(data):
    """(offset, kind, section, length) of every frame of a snapshot file."""
    out, off = [], 16
    while off + 16 <= len(data):
        kind, _, section, length = struct.unpack_from("<BBHI", data, off)
        out.append((off, kind, section, length))
        off += 16 + length
    return out


class SnapshotCase(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="fkv-snap-")
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.kill()
        shutil.rmtree(self.data, ignore_errors=True)

    def start(self, shards=2, directives=(), extra_args=(), preexec_fn=None, registry=REGISTRY):
        srv = ServerProcess(SERVER, shards=shards, directives=[("registry", registry)] + list(directives),
                            data_dir=self.data, extra_args=extra_args, preexec_fn=preexec_fn).start()
        self.servers.append(srv)
        return srv, srv.redis(decode_responses=True)

    def start_fails(self, **kw):
        with self.assertRaises(ServerError) as cm:
            self.start(**kw)
        return str(cm.exception)

    def fill(self, r, users=30, events=600, seed=1):
        rnd = random.Random(seed)
        now = int(time.time())
        evs = [json.dumps({"user_id": rnd.randrange(users), "product_id": rnd.randrange(40),
                           "action": rnd.choice(["click", "view", "add_to_cart", "purchase"]),
                           "timestamp": now - rnd.randrange(3000)}) for _ in range(events)]
        for i in range(0, len(evs), 100):
            r.execute_command("FEVENT", "user_events", *evs[i:i + 100])
        return now

    def everything(self, r, at):
        """Every key with its type, value and TTL class, and every feature AT a fixed time."""
        out = {}
        for k in sorted(r.scan_iter(count=1000)):
            t = r.type(k)
            ttl = r.ttl(k)
            if t == "string":
                v = r.get(k)
            elif t == "hash":
                v = r.hgetall(k)
            else:
                feats = USER_FEATURES if k.startswith("user:") else PRODUCT_FEATURES
                v = r.execute_command("FGET", k, *feats, "AT", at)
            out[k] = (t, v, "none" if ttl == -1 else "ttl")
        return out


def write_key(path, seed):
    """A 32-byte key file, as `openssl rand -hex 32` writes one (hex digits)."""
    with open(path, "w") as f:
        f.write(random.Random(seed).randbytes(32).hex() + "\n")
    return path


class CrashLoopTest(SnapshotCase):
    """kill -9 at 10 seeded moments during the ingest of 200,000 events, with
    direct writes (FEVENT, INCR) kept by the append-only file between them.
    EncryptedCrashLoopTest runs it again with snapshots and append-only files
    encrypted, rotating the key halfway."""

    EVENTS = 200000
    PARTS = 8
    ENCRYPT = False

    def key_directives(self, kills):
        """The encryption directives of the start after `kills` kills: key 1
        until the rotation at the fifth kill, then key 2 with key 1 as the
        previous key (files written before the rotation still load)."""
        if not self.ENCRYPT:
            return []
        k1 = write_key(os.path.join(self.data, "k1.key"), 1)
        k2 = write_key(os.path.join(self.data, "k2.key"), 2)
        if kills < 5:
            return [("snapshot-encryption-key-file", k1)]
        return [("snapshot-encryption-key-file", k2), ("snapshot-encryption-previous-key-file", k1)]

    def test_kill_9_during_ingest_loses_nothing_and_counts_nothing_twice(self):
        rnd = random.Random(20261126)
        mock = MockCluster("--partitions", str(self.PARTS), "--topic", "user_events")
        dump = os.path.join(self.data, "events.txt")
        procs = []
        try:
            # Direct writes too, kept by the append-only file: every one
            # acknowledged must survive every crash, counted once.
            kafka = [("kafka-brokers", mock.bootstrap), ("save", ("1", "1")), ("appendonly", "yes"),
                     ("appendfsync", "always")]
            direct_clicks, acked = {}, [0]

            def write_direct(r, n):
                now_s = int(time.time())
                for _ in range(n):
                    u = 100000 + rnd.randrange(20)  # users Kafka never sends; clicks feed no product view
                    r.execute_command("FEVENT", "user_events", json.dumps(
                        {"user_id": u, "product_id": 100000, "action": "click", "timestamp": now_s}))
                    direct_clicks[u] = direct_clicks.get(u, 0) + 1
                    r.incr("direct:counter")
                    acked[0] += 1
            srv, r = self.start(shards=2, directives=kafka + self.key_directives(0))
            # Plain data written before the first save must survive every crash.
            pipe = r.pipeline(transaction=False)
            for i in range(50000):
                pipe.set("plain:%d" % i, "v" * 100)
            pipe.execute()
            save_now(r)
            # Everything produced is also read back as it is produced (the mock
            # keeps ~5 MiB per partition; 200,000 events over 8 partitions stay
            # well under it, and this copy does not depend on it).
            with open(dump, "w") as out:
                reader = subprocess.Popen(["kcat", "-b", mock.bootstrap, "-C", "-t", "user_events", "-o", "beginning",
                                           "-c", str(self.EVENTS), "-q", "-f", "%p %s\\n"],
                                          stdout=out, stderr=subprocess.DEVNULL)
            procs.append(reader)
            producer = subprocess.Popen([PRODUCE, "--brokers", mock.bootstrap, "--count", str(self.EVENTS),
                                         "--rate", "6000", "--users", "300", "--products", "40", "--seed", "77"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            procs.append(producer)
            kills = 0
            while kills < 10:
                time.sleep(rnd.uniform(0.5, 2.0))
                write_direct(r, 30)
                if kills % 2 == 1:
                    r.bgsave(schedule=True)  # the kill lands during this snapshot (or the one save 1 1 runs)
                    time.sleep(rnd.uniform(0.0, 0.03))
                if self.ENCRYPT and kills == 4:
                    # Rotation: new files use key 2 from here on; the kill
                    # may land before any of them is written.
                    r.config_set("snapshot-encryption-key-file", self.key_directives(5)[0][1])
                srv.kill()  # SIGKILL
                kills += 1
                srv, r = self.start(shards=2, directives=kafka + self.key_directives(kills))
                self.assertEqual(r.dbsize() >= 50000, True)
                self.assertEqual(r.get("plain:49999"), "v" * 100)
                self.assertEqual(int(r.get("direct:counter")), acked[0])
            _, err = producer.communicate(timeout=180)
            self.assertEqual(producer.returncode, 0, err)
            self.assertEqual(reader.wait(timeout=120), 0)
            wait_for(lambda: caught_up(r, self.PARTS, self.EVENTS), 180, "the restarted server to catch up")
            # The server that never crashed, fed from the same topic.
            ref_dir = tempfile.mkdtemp(prefix="fkv-ref-")
            ref = ServerProcess(SERVER, shards=3, directives=[("registry", REGISTRY), ("kafka-brokers", mock.bootstrap),
                                                              ("save", "")], data_dir=ref_dir).start()
            self.servers.append(ref)
            rr = ref.redis(decode_responses=True)
            wait_for(lambda: caught_up(rr, self.PARTS, self.EVENTS), 180, "the reference server to catch up")
            with open(dump) as f:
                events = [json.loads(l.split(" ", 1)[1]) for l in f if l.strip()]
            self.assertEqual(len(events), self.EVENTS)
            at = int(time.time() * 1000)
            users = sorted({e["user_id"] for e in events})
            products = sorted({e["product_id"] for e in events})
            for keys, feats in ((["user:%d" % u for u in users], USER_FEATURES),
                                (["product:%d" % p for p in products], PRODUCT_FEATURES)):
                got = r.execute_command("FMGET", *keys, "FEATURES", *feats, "AT", at)
                want = rr.execute_command("FMGET", *keys, "FEATURES", *feats, "AT", at)
                for k, g, w in zip(keys, got, want):
                    self.assertEqual(g, w, k)
            # And the exact counts against the model of the messages themselves.
            clicks, purchases = {}, {}
            for e in events:
                clicks[e["user_id"]] = clicks.get(e["user_id"], 0) + (e["action"] == "click")
                purchases[e["product_id"]] = purchases.get(e["product_id"], 0) + (e["action"] == "purchase")
            got = r.execute_command("FMGET", *["user:%d" % u for u in users], "FEATURES", "clicks_1h", "AT", at)
            self.assertEqual([g[0] for g in got], [clicks[u] for u in users])
            got = r.execute_command("FMGET", *["product:%d" % p for p in products], "FEATURES", "purchases_1h",
                                    "AT", at)
            self.assertEqual([g[0] for g in got], [purchases[p] for p in products])
            direct_users = sorted(direct_clicks)
            got = r.execute_command("FMGET", *["user:%d" % u for u in direct_users], "FEATURES", "clicks_1h", "AT", at)
            self.assertEqual([g[0] for g in got], [direct_clicks[u] for u in direct_users])
            ref.stop()
            shutil.rmtree(ref_dir, ignore_errors=True)
            if self.ENCRYPT:
                # Nothing written in the clear: no key or value of the plain
                # data, no direct-write counter, in any file on disk.
                save_now(r)
                files = [os.path.join(d, f) for d, _, fs in os.walk(self.data) for f in fs
                         if f.startswith(SNAP) or "appendonly" in d]
                self.assertTrue(any(f.endswith(SNAP) for f in files), files)
                for path in files:
                    with open(path, "rb") as f:
                        data = f.read()
                    for needle in (b"plain:4", b"v" * 100, b"direct:counter", b"user_events"):
                        self.assertNotIn(needle, data, path)
                with open(os.path.join(self.data, SNAP), "rb") as f:
                    head = f.read(24)
                self.assertEqual(struct.unpack_from("<I", head, 12)[0], 1)  # flag 1: encrypted
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            mock.kill()


class EncryptedCrashLoopTest(CrashLoopTest):
    ENCRYPT = True


class RoundTripTest(SnapshotCase):
    def test_everything_survives_a_save_and_a_load_with_another_shard_count(self):
        srv, r = self.start(shards=3, directives=[("save", "")])
        self.fill(r)
        r.set("s1", "hello")
        r.set("s2", "with ttl", ex=1000)
        r.hset("h1", mapping={"f%d" % i: "v%d" % i for i in range(200)})  # a large hash
        r.hset("h2", mapping={"a": "1"})
        r.execute_command("EXPIRE", "user:3", 5000)  # an entity with its own expiry
        at = int(time.time() * 1000)
        before = self.everything(r, at)
        self.assertTrue(r.save())
        srv.stop()
        srv, r = self.start(shards=1, directives=[("save", "")])
        self.assertEqual(self.everything(r, at), before)
        self.assertIn("snapshot loaded", srv.log_text())
        info = r.info("persistence")
        self.assertTrue(info["snapshot_loaded_from"].endswith(SNAP))
        self.assertEqual(info["snapshot_loaded_records"], len(before))

    def test_sigterm_saves_when_save_rules_exist_and_shutdown_nosave_does_not(self):
        srv, r = self.start(directives=[("save", ("3600", "1"))])
        r.set("k", "1")
        srv.stop()  # SIGTERM: saves
        srv, r = self.start(directives=[("save", ("3600", "1"))])
        self.assertEqual(r.get("k"), "1")
        r.set("k", "2")
        try:
            r.execute_command("SHUTDOWN", "NOSAVE")
        except Exception:  # the connection closes
            pass
        self.assertEqual(srv.wait_exit(10), 0)
        srv, r = self.start(directives=[("save", "")])
        self.assertEqual(r.get("k"), "1")
        r.set("k", "3")
        try:
            r.execute_command("SHUTDOWN", "SAVE")  # saves even without rules
        except Exception:
            pass
        self.assertEqual(srv.wait_exit(10), 0)
        srv, r = self.start(directives=[("save", "")])
        self.assertEqual(r.get("k"), "3")

    def test_save_rules_save_by_themselves(self):
        srv, r = self.start(directives=[("save", ("1", "3"))])
        t0 = r.lastsave()
        for i in range(3):
            r.set("k%d" % i, "v")
        wait_for(lambda: r.info("persistence")["rdb_saves"] >= 1, 10, "an automatic save")
        self.assertGreaterEqual(r.lastsave(), t0)
        self.assertEqual(r.info("persistence")["rdb_changes_since_last_save"], 0)
        self.assertTrue(os.path.exists(os.path.join(self.data, SNAP)))


class CorruptionTest(SnapshotCase):
    def make_snapshot(self):
        srv, r = self.start(shards=2, directives=[("save", "")])
        self.fill(r, events=300)
        r.set("marker", "first")
        self.assertTrue(r.save())
        srv.stop()
        with open(os.path.join(self.data, SNAP), "rb") as f:
            return f.read()

    def write(self, data, name=SNAP):
        with open(os.path.join(self.data, name), "wb") as f:
            f.write(data)

    def test_every_damaged_frame_and_truncation_is_refused_with_a_clear_message(self):
        good = self.make_snapshot()
        fr = frames(good)
        kinds = {k for _, k, _, _ in fr}
        self.assertEqual(kinds, {1, 2, 3, 4, 5, 6, 7})
        names = {1: "HEADER", 2: "VIEWS", 3: "KAFKA", 4: "RECORDS", 5: "SECTION_END", 6: "FOOTER", 7: "LAYOUTS"}
        cases = []
        for off, kind, section, length in fr:
            for pos in (off + 4, off + 16 + length // 2) if length else (off + 4,):
                bad = bytearray(good)
                bad[pos] ^= 0x40
                cases.append(("flip in " + names[kind], bytes(bad), names[kind]))
        for off, _, _, _ in fr[1:]:
            cases.append(("truncated at %d" % off, good[:off], "truncated"))
        rnd = random.Random(5)
        for cut in sorted(rnd.sample(range(17, len(good) - 1), 8)):
            cases.append(("truncated at %d" % cut, good[:cut], "truncated"))
        v3 = bytearray(good)
        v3[8] = 3
        cases.append(("version 3", bytes(v3), "unsupported format version 3"))
        v1 = bytearray(good)
        v1[8] = 1  # the format before the compact entity state: refused, saying what to do
        cases.append(("version 1", bytes(v1), "version 1 files were written by featurekv 0.1 before"))
        cases.append(("not a snapshot", b"hello world, not a snapshot at all", "bad magic"))
        cases.append(("garbage after the footer", good + b"x" * 20, "data after the FOOTER"))
        for what, data, expect in cases:
            with self.subTest(what=what):
                os.unlink(os.path.join(self.data, SNAP))
                self.write(data)
                msg = self.start_fails(directives=[("save", "")])
                self.assertIn("snapshot " + os.path.join(self.data, SNAP), msg)
                self.assertIn(expect, msg, what)
                self.assertIn("--ignore-snapshot", msg)

    def test_a_refused_snapshot_falls_back_to_the_previous_one(self):
        good = self.make_snapshot()
        srv, r = self.start(directives=[("save", "")])
        r.set("marker", "second")
        self.assertTrue(r.save())  # the first file becomes featurekv.snap.prev
        srv.stop()
        self.assertTrue(os.path.exists(os.path.join(self.data, SNAP + ".prev")))
        with open(os.path.join(self.data, SNAP), "rb") as f:
            newer = bytearray(f.read())
        newer[len(newer) // 2] ^= 1
        self.write(bytes(newer))
        srv, r = self.start(directives=[("save", "")])
        self.assertEqual(r.get("marker"), "first")  # never half of the newer one
        log = srv.log_text()
        self.assertIn("snapshot refused", log)
        self.assertIn("started from the previous snapshot", log)
        self.assertTrue(r.info("persistence")["snapshot_loaded_from"].endswith(".prev"))
        self.assertEqual(len(good) > 0, True)

    def test_ignore_snapshot_starts_empty(self):
        self.make_snapshot()
        self.write(b"FKVSNAP\n\x01\x00\x00\x00\x00\x00\x00\x00garbage")
        self.start_fails(directives=[("save", "")])
        srv, r = self.start(directives=[("save", "")], extra_args=["--ignore-snapshot"])
        self.assertEqual(r.dbsize(), 0)
        self.assertIn("--ignore-snapshot", srv.log_text())


class DiskFullTest(SnapshotCase):
    def test_a_failing_write_keeps_the_old_snapshot_and_the_server_serving(self):
        limit = 1 << 20  # a 1 MiB file size limit: writes past it fail with EFBIG

        def small_files():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        srv, r = self.start(directives=[("save", "")], preexec_fn=small_files)
        r.set("small", "1")
        self.assertTrue(r.save())
        pipe = r.pipeline(transaction=False)
        for i in range(3000):
            pipe.set("big:%d" % i, "x" * 1000)  # 3 MB: over the limit
        pipe.execute()
        with self.assertRaises(Exception) as cm:
            r.save()
        self.assertIn("File too large", str(cm.exception))
        info = r.info("persistence")
        self.assertEqual(info["rdb_last_bgsave_status"], "err")
        self.assertIn("File too large", info["snapshot_last_error"])
        self.assertEqual(r.get("big:2999"), "x" * 1000)  # still serving
        self.assertFalse(os.path.exists(os.path.join(self.data, SNAP + ".tmp")))
        self.assertIn("snapshot failed", srv.log_text())
        srv.kill()
        srv, r = self.start(directives=[("save", "")])
        self.assertEqual(r.get("small"), "1")  # the old snapshot, intact
        self.assertIsNone(r.get("big:0"))


class RegistryChangeTest(SnapshotCase):
    def test_unchanged_aggregations_keep_state_new_ones_start_empty_removed_ones_go(self):
        srv, r = self.start(directives=[("save", "")])
        self.fill(r, users=10, events=300)
        at = int(time.time() * 1000)
        before = r.execute_command("FGET", "user:1", "clicks_1h", "purchases_24h", "last_action", "AT", at)
        self.assertTrue(r.save())
        srv.stop()
        with open(REGISTRY) as f:
            text = f.read()
        text = text.replace('      purchases:   {agg: count, where: "action == \'purchase\'", windows: [1h, 24h]}\n', "")
        text = text.replace("      last_action: {agg: last, field: action}\n",
                            "      last_action: {agg: last, field: action}\n"
                            "      carts:       {agg: count, where: \"action == 'add_to_cart'\", windows: [1h]}\n")
        text = text.replace("products:    {agg: count_distinct, field: product_id, windows: [1h]}",
                            "products:    {agg: count_distinct, field: product_id, windows: [30m]}")
        self.assertIn("carts", text)
        reg = os.path.join(self.data, "changed.yaml")
        with open(reg, "w") as f:
            f.write(text)
        srv, r = self.start(directives=[("save", "")], registry=reg)
        self.assertEqual(r.execute_command("FGET", "user:1", "clicks_1h", "last_action", "carts_1h", "products_30m",
                                           "AT", at), [before[0], before[2], 0, 0])
        with self.assertRaises(Exception) as cm:
            r.execute_command("FGET", "user:1", "purchases_24h")
        self.assertIn("unknown feature", str(cm.exception))
        log = srv.log_text()
        self.assertIn("aggregation user_activity.purchases is no longer in the registry", log)
        self.assertIn("aggregation user_activity.carts is new or changed: it starts empty", log)
        self.assertIn("aggregation user_activity.products is new or changed: it starts empty", log)


class GroupCommitTest(SnapshotCase):
    def test_offsets_are_committed_only_by_a_durable_snapshot(self):
        mock = MockCluster("--partitions", "2", "--topic", "user_events")
        try:
            group = [("kafka-brokers", mock.bootstrap), ("kafka-group", "commit-test"), ("save", ""),
                     ("kafka-property", ("session.timeout.ms", "6000")),
                     ("kafka-property", ("heartbeat.interval.ms", "500"))]
            srv, r = self.start(directives=group)
            p = subprocess.run([PRODUCE, "--brokers", mock.bootstrap, "--count", "500", "--rate", "0"],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            wait_for(lambda: caught_up(r, 2, 500), 60, "500 events consumed")
            info = r.info("ingest")
            self.assertTrue(all("committed=-1" in str(v) or v.get("committed") == -1
                                for k, v in info.items() if k.startswith("partition_")))  # nothing yet
            self.assertTrue(r.save())

            def committed():
                info = r.info("ingest")
                return sum(v["committed"] if isinstance(v, dict) else int(v.split("committed=")[1].split(",")[0])
                           for k, v in info.items() if k.startswith("partition_"))
            wait_for(lambda: committed() == 500, 10, "the group to acknowledge the commit")
            srv.kill()
            # A member without the snapshot starts at the group's committed
            # offsets: nothing before them is consumed again.
            shutil.rmtree(self.data)
            os.makedirs(self.data)
            srv, r = self.start(directives=group)
            wait_for(lambda: len(partitions(r)) == 2, 60, "partitions assigned")
            wait_for(lambda: caught_up(r, 2, 500), 30, "positions at the committed offsets")
            self.assertEqual(int(r.info("ingest")["kafka_messages"]), 0)
        finally:
            mock.kill()


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]] + sys.argv[4:], verbosity=1)
