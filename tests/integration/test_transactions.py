#!/usr/bin/python3
"""MULTI / EXEC / DISCARD / WATCH / UNWATCH through redis-py (its default
pipeline() is a transaction) and raw RESP, with 1 and 4 shards: keys on
several shards in one EXEC, WATCH aborting on a concurrent change, EXEC
atomic against a concurrent reader, FEVENT and FSET queued, the errors.
(Replies against redis-server 7: test_redis_parity.py.)

usage: test_transactions.py SERVER [unittest args]
"""
import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fkv_testlib import RespError, ServerProcess  # noqa: E402
import redis  # noqa: E402  (python3-redis, Debian)

SERVER = sys.argv.pop(1) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "build/server/featurekv-server"
REGISTRY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "conf", "features.yaml")


def text(reply):
    """An error reply's text, or the reply."""
    return reply.message if isinstance(reply, RespError) else reply


class Transactions:
    SHARDS = 1

    @classmethod
    def setUpClass(cls):
        cls.srv = ServerProcess(SERVER, shards=cls.SHARDS, directives=[("registry", REGISTRY), ("save", "")]).start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def setUp(self):
        self.r = self.srv.redis()
        self.r.flushall()

    def tearDown(self):
        self.assertTrue(self.srv.alive(), self.srv.diagnostics())

    def test_redis_py_pipeline_is_a_transaction_over_every_shard(self):
        keys = ["k%d" % i for i in range(20)]  # on every shard of 4
        with self.r.pipeline() as p:  # transaction=True by default
            for i, k in enumerate(keys):
                p.set(k, i)
            p.incr(keys[0])
            p.mget(keys)
            p.delete(keys[1], keys[2])
            p.exists(*keys)
            out = p.execute()
        self.assertEqual(out[:20], [True] * 20)
        self.assertEqual(out[20], 1)
        self.assertEqual(out[21], ["1"] + [str(i) for i in range(1, 20)])
        self.assertEqual(out[22:], [2, 18])

    def test_watch_aborts_on_a_concurrent_change_and_passes_without_one(self):
        other = self.srv.redis()
        self.r.set("balance", 10)
        with self.r.pipeline() as p:
            p.watch("balance", "k3")
            v = int(p.get("balance"))
            other.set("balance", 99)  # another client changes it
            p.multi()
            p.set("balance", v + 1)
            with self.assertRaises(redis.WatchError):
                p.execute()
        self.assertEqual(self.r.get("balance"), "99")
        with self.r.pipeline() as p:  # unchanged: EXEC runs
            p.watch("balance")
            v = int(p.get("balance"))
            other.get("balance")  # a read is not a change
            p.multi()
            p.set("balance", v + 1)
            self.assertEqual(p.execute(), [True])
        self.assertEqual(self.r.get("balance"), "100")
        # An expiry set meanwhile is a change too; so is the key's deletion.
        for change in (lambda: other.expire("balance", 100), lambda: other.delete("balance")):
            with self.r.pipeline() as p:
                p.watch("balance")
                change()
                p.multi()
                p.incr("balance")
                with self.assertRaises(redis.WatchError):
                    p.execute()

    def test_exec_is_atomic_against_a_concurrent_reader(self):
        # The writer moves one unit from a to b in each transaction; a reader
        # reading both in one transaction must always see the sum unchanged.
        # "a" and "b" are on different shards when there are 4.
        self.r.mset({"a": 1000, "b": 0})
        stop = threading.Event()
        seen = []
        errors = []

        def cmd(*args):
            return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)

        # 50 transactions in one write, so the server runs them back to back
        # while the reader's transactions arrive.
        one = cmd(b"MULTI") + cmd(b"DECR", b"a") + b"".join(cmd(b"INCR", b"filler%d" % i) for i in range(40)) + \
            cmd(b"INCR", b"b") + cmd(b"EXEC")

        def writer():
            try:
                with self.srv.raw(timeout=60) as w:
                    for _ in range(6):
                        w.send(one * 50)
                        for _ in range(50 * 44):
                            w.read_reply()
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(e)
            finally:
                stop.set()

        t = threading.Thread(target=writer)
        t.start()
        rd = self.srv.redis()
        deadline = time.time() + 60
        while not stop.is_set() and time.time() < deadline:
            with rd.pipeline() as p:
                p.get("a")
                p.get("b")
                a, b = p.execute()
            seen.append(int(a) + int(b))
        t.join(60)
        self.assertEqual(errors, [])
        self.assertTrue(seen)
        self.assertEqual(set(seen), {1000})
        self.assertEqual(self.r.mget("a", "b"), ["700", "300"])

    def test_fevent_and_fset_inside_a_transaction(self):
        now = int(time.time())
        ev = json.dumps({"user_id": 7, "product_id": 3, "action": "click", "timestamp": now})
        with self.r.pipeline() as p:
            p.execute_command("FEVENT", "user_events", ev, ev)
            p.execute_command("FSET", "user:7", "last_action", "checkout")
            p.execute_command("FGET", "user:7", "clicks_1h", "last_action")
            p.set("plain", "x")
            out = p.execute()
        self.assertEqual(out, [2, "OK", [2, "checkout"], True])
        self.assertEqual(int(self.r.info("ingest")["events_applied"]) >= 2, True)

    def test_fmget_inside_a_transaction(self):
        # FMGET's keys end at FEATURES (the feature names and AT are not
        # keys): in EXEC it reads the same as outside, on 1 and 4 shards.
        now = int(time.time())
        evs = [json.dumps({"user_id": u, "product_id": 3, "action": "click", "timestamp": now}) for u in range(1, 9)]
        self.assertEqual(self.r.execute_command("FEVENT", "user_events", *evs), 8)
        keys = ["user:%d" % u for u in range(1, 9)] + ["user:99"]
        want = self.r.execute_command("FMGET", *keys, "FEATURES", "clicks_1h", "last_action")
        self.assertEqual(want, [[1, "click"]] * 8 + [[None, None]])
        with self.r.pipeline() as p:
            p.execute_command("FMGET", *keys, "FEATURES", "clicks_1h", "last_action")
            p.execute_command("FMGET", "user:1", "FEATURES", "clicks_1h", "AT", str(now * 1000 + 1))
            p.incr("counter")
            out = p.execute()
        self.assertEqual(out, [want, [[1]], 1])

    def test_errors_and_discard(self):
        raw = self.srv.raw()
        self.assertEqual(raw.command("MULTI"), "OK")
        self.assertEqual(raw.command("SET", "q", "1"), "QUEUED")
        self.assertIn("wrong number of arguments", text(raw.command("GET")))
        self.assertIn("Command not allowed inside a transaction", text(raw.command("FREGISTRY", "RELOAD")))
        self.assertEqual(text(raw.command("EXEC")), "EXECABORT Transaction discarded because of previous errors.")
        self.assertIsNone(raw.command("GET", "q"))  # nothing ran
        self.assertEqual(raw.command("MULTI"), "OK")
        self.assertEqual(raw.command("SET", "q", "1"), "QUEUED")
        self.assertEqual(raw.command("DISCARD"), "OK")
        self.assertIsNone(raw.command("GET", "q"))
        self.assertEqual(raw.command("MULTI"), "OK")
        self.assertEqual(raw.command("SET", "q", "2"), "QUEUED")
        self.assertEqual(raw.command("RESET"), "RESET")  # RESET drops the transaction
        self.assertEqual(text(raw.command("EXEC")), "ERR EXEC without MULTI")
        self.assertIsNone(raw.command("GET", "q"))
        # A failing command inside EXEC does not stop the others (as Redis).
        raw.command("HSET", "h", "f", "v")
        self.assertEqual(raw.command("MULTI"), "OK")
        for cmd in (("INCR", "h"), ("SET", "q", "3")):
            self.assertEqual(raw.command(*cmd), "QUEUED")
        out = raw.command("EXEC")
        self.assertIn("WRONGTYPE", text(out[0]))
        self.assertEqual(out[1], "OK")
        raw.close()

    def test_a_pipeline_of_many_transactions(self):
        # 200 transactions of 5 commands in one write, as a batch client sends them.
        raw = self.srv.raw(timeout=30)
        one = b"*1\r\n$5\r\nMULTI\r\n" + b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n" * 2 + \
            b"*2\r\n$4\r\nINCR\r\n$1\r\nm\r\n" * 3 + b"*1\r\n$4\r\nEXEC\r\n"
        raw.send(one * 200)
        last = None
        for _ in range(200):
            for _ in range(6):
                raw.read_reply()
            last = raw.read_reply()
        self.assertEqual(last, [399, 400, 598, 599, 600])
        raw.close()


class OneShard(Transactions, unittest.TestCase):
    SHARDS = 1


class FourShards(Transactions, unittest.TestCase):
    SHARDS = 4


if __name__ == "__main__":
    unittest.main(verbosity=2)
