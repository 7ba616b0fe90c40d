#!/usr/bin/python3
"""The append-only file through real processes: kill -9 after acknowledged
direct writes (FEVENT, FSET, SET, HSET, EXPIRE, DEL, MSET, RENAME, FLUSHALL,
a transaction) with appendfsync always loses nothing; everysec keeps what
was fsynced; a snapshot plus the file never counts an event twice; old
generations go once two snapshots cover them; a truncated tail loads with a
warning (refused with aof-load-truncated no); a corrupt record refuses the
start naming the file and the offset; Kafka-ingested events are not logged.

usage: test_aof.py SERVER MOCK_KAFKA PRODUCE [unittest args]
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fkv_testlib import ServerError, ServerProcess, encode_command, wait_until  # noqa: E402
from test_kafka_tools import MockCluster  # noqa: E402
import test_kafka_tools  # noqa: E402

SERVER = sys.argv.pop(1) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "build/server/featurekv-server"
test_kafka_tools.MOCK = sys.argv.pop(1) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") \
    else "build/tools/featurekv-mock-kafka"
PRODUCE = sys.argv.pop(1) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "build/tools/featurekv-produce"
REGISTRY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "conf", "features.yaml")


def ev(user, action, ts, product=1):
    return json.dumps({"user_id": user, "product_id": product, "action": action, "timestamp": ts})


class AofTest(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="fkv-aof-")
        self.srv = None

    def tearDown(self):
        if self.srv is not None:
            self.srv.kill()
        shutil.rmtree(self.data, ignore_errors=True)

    def start(self, fsync="always", shards=2, extra=()):
        self.srv = ServerProcess(SERVER, shards=shards, data_dir=self.data, directives=[
            ("registry", REGISTRY), ("save", ""), ("appendonly", "yes"), ("appendfsync", fsync)] + list(extra)).start()
        return self.srv.redis()

    def crash(self):
        """kill -9, as a power cut would stop it."""
        self.srv.kill()
        self.srv = None

    def logs(self):
        d = os.path.join(self.data, "appendonlydir")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def state(self, r, users=(1, 2, 3)):
        out = {"keys": sorted(r.keys("*")), "s": r.get("s"), "h": r.hgetall("h"), "ttl": r.ttl("s") > 0,
               "counter": r.get("counter")}
        for k in sorted(r.keys("m*")):
            out[k] = r.get(k)
        for u in users:
            out["user:%d" % u] = r.execute_command("FGET", "user:%d" % u, "clicks_1h", "purchases_24h", "last_action",
                                                   "recent_products")
        return out

    def test_kill9_with_appendfsync_always_loses_nothing(self):
        r = self.start("always")
        now = int(time.time())
        r.set("gone", "x")
        r.flushall()  # logged too: what came before it stays gone
        r.set("s", "v1")
        r.expire("s", 1000)
        r.hset("h", mapping={"a": "1", "b": "2"})
        r.hdel("h", "b")
        r.mset({"m%d" % i: str(i) for i in range(12)})  # on both shards
        r.delete("m3", "m4")
        r.rename("m5", "renamed5")
        for _ in range(5):
            r.incr("counter")
        # Purchases of several products: a purchase feeds the user's view and
        # the product's, often on the other shard, so both shards log it.
        events = [ev(u, a, now, p) for u in (1, 2, 3) for a, p in [("click", 7)] + [("purchase", q) for q in range(11, 19)]]
        self.assertEqual(r.execute_command("FEVENT", "user_events", *events), len(events))
        r.execute_command("FSET", "user:1", "last_action", "logout")
        with r.pipeline() as p:  # a transaction across shards
            p.incr("counter")
            p.set("m0", "tx")
            p.execute_command("FEVENT", "user_events", ev(2, "click", now))
            p.execute()
        want = self.state(r)
        self.assertEqual(want["user:2"][0:2], [2, 8])
        self.assertEqual(len({n.split(".")[-1] for n in self.logs()}), 2, self.logs())  # both shards logged
        self.crash()
        r = self.start("always")
        self.assertEqual(self.state(r), want)
        self.assertIsNone(r.get("gone"))
        self.assertGreater(int(r.info("persistence")["aof_replayed_records"]), 0)

    def test_always_replies_only_after_the_fsync(self):
        """Under always a reply leaves after the fsync of its write (one
        fsync for every connection of a loop pass): read right after it,
        once it and the other clients' pipelined writes beside it are
        answered, nothing appended is left unsynced."""
        r = self.start("always")
        others = [self.srv.raw() for _ in range(4)]
        now = int(time.time())
        try:
            for i in range(60):
                for n, o in enumerate(others):  # run beside ours, in the same loop passes
                    o.send(b"".join(encode_command("SET", "other:%d:%d" % (n, j), str(i)) for j in range(8)))
                if i % 3 == 0:
                    r.set("k%d" % i, i)
                elif i % 3 == 1:
                    r.incr("counter")
                else:
                    r.execute_command("FEVENT", "user_events", ev(i % 5, "click", now))
                for o in others:
                    for _ in range(8):
                        self.assertEqual(o.read_raw_reply(), b"+OK\r\n")
                # Every write made was answered, so each one is fsynced.
                self.assertEqual(int(r.info("persistence")["aof_pending_fsync_bytes"]), 0, "after write %d" % i)
        finally:
            for o in others:
                o.close()

    def test_megabytes_in_one_pass_come_back(self):
        """Writes larger than a block (1 MiB of records) in one writer pass:
        an encrypted file cuts them into several blocks."""
        r = self.start("always", shards=1)
        with r.pipeline(transaction=False) as p:
            for i in range(24):
                p.set("big:%d" % i, ("%02d" % i) * 100000)  # 200 KB each
            p.execute()
        self.crash()
        r = self.start("always", shards=1)
        self.assertEqual(r.dbsize(), 24)
        self.assertEqual(r.get("big:23"), "23" * 100000)

    def test_everysec_keeps_what_was_fsynced(self):
        r = self.start("everysec")
        r.set("s", "v")
        r.incr("counter")
        # everysec fsyncs within about a second: wait for it, then crash.
        wait_until(lambda: int(r.info("persistence")["aof_pending_fsync_bytes"]) == 0, timeout=10,
                   what="the background fsync")
        want = self.state(r)
        self.crash()
        r = self.start("everysec")
        self.assertEqual(self.state(r), want)

    def test_snapshot_and_aof_never_count_twice(self):
        r = self.start("everysec")
        now = int(time.time())
        for i in range(3):
            r.execute_command("FEVENT", "user_events", *[ev(1, "click", now)] * 10)
            r.incr("counter")
            self.assertTrue(r.save())  # each save starts a new generation at its cut
            r.execute_command("FEVENT", "user_events", *[ev(1, "click", now)] * 5)
            r.incr("counter")
        gens = {name.split(".")[2] for name in self.logs()}
        # Generations before the previous snapshot's cut are gone.
        self.assertLessEqual(len(gens), 3, self.logs())
        wait_until(lambda: int(r.info("persistence")["aof_pending_fsync_bytes"]) == 0, timeout=10,
                   what="the background fsync")
        want = self.state(r, users=(1,))
        self.assertEqual(want["user:1"][0], 45)
        self.assertEqual(want["counter"], "6")
        self.crash()
        r = self.start("everysec")
        self.assertEqual(self.state(r, users=(1,)), want)
        # And again after a clean stop (the writer flushes), without a new snapshot.
        self.srv.stop()
        self.srv = None
        r = self.start("everysec")
        self.assertEqual(self.state(r, users=(1,)), want)

    def last_log(self):
        files = [f for f in self.logs() if os.path.getsize(os.path.join(self.data, "appendonlydir", f)) > 32]
        self.assertTrue(files, self.logs())
        return os.path.join(self.data, "appendonlydir", files[-1])

    def ten_keys_then_stop(self, value):
        """Ten SETs logged on one shard, a clean stop; returns the log file."""
        r = self.start("always", shards=1)
        for i in range(10):
            r.set("k%d" % i, value % i)
        self.srv.stop()
        self.srv = None
        return self.last_log()

    def test_truncated_tail_loads_with_a_warning_or_is_refused(self):
        path = self.ten_keys_then_stop("v%d")
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(size - 3)  # the last record cut short, as by a crash mid-write
        with self.assertRaises(ServerError) as cm:
            self.start("always", shards=1, extra=[("aof-load-truncated", "no")])
        self.assertIn("truncated", str(cm.exception))
        self.assertIn(path, str(cm.exception))
        self.srv = None
        r = self.start("always", shards=1)
        self.assertEqual(r.dbsize(), 9)  # the cut record (k9) is lost, the others loaded
        self.assertIsNone(r.get("k9"))
        self.assertIn("is truncated at byte", self.srv.log_text())
        # The file was cut back to its last whole record: later writes append cleanly.
        r.set("after", "1")
        self.srv.stop()
        self.srv = None
        r = self.start("always", shards=1)
        self.assertEqual(r.dbsize(), 10)

    def test_a_corrupt_record_refuses_the_start_naming_file_and_offset(self):
        path = self.ten_keys_then_stop("value-%d")
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            pos = data.index(b"value-4")
            data[pos] ^= 0x20
            f.seek(0)
            f.write(data)
        with self.assertRaises(ServerError) as cm:
            self.start("always", shards=1)
        self.assertIn(path + " at byte", str(cm.exception))
        self.assertIn("corrupt record", str(cm.exception))
        self.srv = None

    @unittest.skipIf(os.environ.get("FKV_NO_KAFKA_MOCK"), "librdkafka's mock cluster crashes under ThreadSanitizer")
    def test_kafka_events_are_not_logged_nor_counted_twice(self):
        mock = MockCluster("--partitions", "2", "--topic", "user_events")
        self.addCleanup(mock.kill)
        p = subprocess.run([PRODUCE, "--brokers", mock.bootstrap, "--count", "2000", "--rate", "0", "--users", "50",
                            "--products", "10", "--seed", "5"], capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        kafka = [("kafka-brokers", mock.bootstrap)]
        r = self.start("always", extra=kafka)
        wait_until(lambda: int(r.info("ingest")["events_applied"]) == 2000, timeout=60, what="the Kafka events")
        # Nothing of it in the append-only files: only headers, if anything.
        appended = int(r.info("persistence")["aof_appended_bytes"])
        self.assertEqual(appended, 0)
        now = int(time.time())
        r.execute_command("FEVENT", "user_events", *[ev(1, "click", now)] * 7)
        self.assertTrue(r.save())  # Kafka offsets and the store, at one cut
        r.execute_command("FEVENT", "user_events", *[ev(1, "click", now)] * 3)
        want = r.execute_command("FGET", "user:1", "clicks_1h")
        total = [r.execute_command("FGET", "user:%d" % u, "clicks_1h")[0] for u in range(50)]
        self.crash()
        r = self.start("always", extra=kafka)

        def caught_up():
            parts = [v for k, v in r.info("ingest").items() if k.startswith("partition_user_events_")]
            fields = [v if isinstance(v, dict) else dict(kv.split("=") for kv in v.split(",")) for v in parts]
            return len(fields) == 2 and all(int(f["lag"]) == 0 for f in fields) and \
                int(r.info("ingest").get("kafka_batches_in_flight", 0)) == 0
        # Kafka resumes at the snapshot's offsets (nothing left after them);
        # the file adds the 3 events after the cut, once.
        wait_until(caught_up, timeout=60, what="the consumer to catch up")
        self.assertEqual(r.execute_command("FGET", "user:1", "clicks_1h"), want)
        self.assertEqual([r.execute_command("FGET", "user:%d" % u, "clicks_1h")[0] for u in range(50)], total)


class EncryptedAofTest(AofTest):
    """Every test above again with encryption at rest on: the files hold
    sealed blocks (server/aof.h), and what they hold never shows in the clear."""

    def start(self, fsync="always", shards=2, extra=()):
        key = os.path.join(self.data, "aof.key")
        if not os.path.exists(key):
            with open(key, "wb") as f:
                f.write(os.urandom(32))
        return super().start(fsync, shards, [("snapshot-encryption-key-file", key)] + list(extra))

    def last_log(self):
        files = [f for f in self.logs() if os.path.getsize(os.path.join(self.data, "appendonlydir", f)) > 56]
        self.assertTrue(files, self.logs())
        return os.path.join(self.data, "appendonlydir", files[-1])

    def test_a_corrupt_record_refuses_the_start_naming_file_and_offset(self):
        path = self.ten_keys_then_stop("value-%d")
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            self.assertNotIn(b"value-4", data)
            self.assertEqual(struct.unpack_from("<I", data, 20)[0], 1)  # flag 1: encrypted
            # The fifth block's first sealed byte (blocks: u32 length, u32 checksum, sealed).
            off = 56
            for _ in range(4):
                off += 8 + struct.unpack_from("<I", data, off)[0]
            data[off + 8 + 12] ^= 0x20
            f.seek(0)
            f.write(data)
        with self.assertRaises(ServerError) as cm:
            self.start("always", shards=1)
        self.assertIn("%s at byte %d: corrupt block (checksum mismatch)" % (path, off), str(cm.exception))
        self.srv = None
        # The same change with the checksum made to match: the tag refuses it.
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            n = struct.unpack_from("<I", data, off)[0]
            struct.pack_into("<I", data, off + 4, xxh32(bytes(data[off + 8:off + 8 + n]), n))
            f.seek(0)
            f.write(data)
        with self.assertRaises(ServerError) as cm:
            self.start("always", shards=1)
        self.assertIn("%s at byte %d: corrupt block (authentication failed" % (path, off), str(cm.exception))
        self.srv = None

    def test_megabytes_in_one_pass_come_back(self):
        super().test_megabytes_in_one_pass_come_back()
        # The first run's file: the 4.8 MB of records in several blocks, each
        # at most 1 MiB of records and one more.
        first = min(self.logs(), key=lambda n: int(n.split(".")[-2]))
        with open(os.path.join(self.data, "appendonlydir", first), "rb") as f:
            data = f.read()
        sizes, off = [], 56
        while off + 8 <= len(data):
            n = struct.unpack_from("<I", data, off)[0]
            sizes.append(n)
            off += 8 + n
        self.assertEqual(off, len(data))
        self.assertGreaterEqual(len(sizes), 4, sizes)
        self.assertLessEqual(max(sizes), (1 << 20) + 200100 + 28, sizes)

    def test_nothing_is_in_the_clear_and_another_key_is_refused(self):
        r = self.start("always", shards=1)
        r.set("pii:carol", "carol@example.com")
        r.execute_command("FEVENT", "user_events", ev(424242, "click", int(time.time())))
        self.srv.stop()
        self.srv = None
        for name in self.logs():
            with open(os.path.join(self.data, "appendonlydir", name), "rb") as f:
                data = f.read()
            for needle in (b"pii:carol", b"carol@example.com", b"424242", b"user_events"):
                self.assertNotIn(needle, data, name)
        with open(os.path.join(self.data, "aof.key"), "wb") as f:
            f.write(os.urandom(32))
        with self.assertRaises(ServerError) as cm:
            self.start("always", shards=1)
        self.assertIn("which is not among the keys given", str(cm.exception))
        self.srv = None


def xxh32(data, seed):
    """XXH32, as the append-only file's checksums (xxhash's reference algorithm)."""
    p1, p2, p3, p4, p5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
    m = 0xFFFFFFFF

    def rotl(x, r):
        return ((x << r) | (x >> (32 - r))) & m

    def rnd(acc, lane):
        return (rotl((acc + lane * p2) & m, 13) * p1) & m
    n, i = len(data), 0
    if n >= 16:
        v = [(seed + p1 + p2) & m, (seed + p2) & m, seed & m, (seed - p1) & m]
        while i + 16 <= n:
            for j in range(4):
                v[j] = rnd(v[j], struct.unpack_from("<I", data, i + 4 * j)[0])
            i += 16
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & m
    else:
        h = (seed + p5) & m
    h = (h + n) & m
    while i + 4 <= n:
        h = (rotl((h + struct.unpack_from("<I", data, i)[0] * p3) & m, 17) * p4) & m
        i += 4
    while i < n:
        h = (rotl((h + data[i] * p5) & m, 11) * p1) & m
        i += 1
    h ^= h >> 15
    h = (h * p2) & m
    h ^= h >> 13
    h = (h * p3) & m
    return h ^ (h >> 16)


if __name__ == "__main__":
    unittest.main(verbosity=2)
