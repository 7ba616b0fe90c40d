#!/usr/bin/python3
"""featurekv beside redis-server 7: the same commands, the same replies.

Run:  /usr/bin/python3 test_redis_parity.py SERVER_BINARY [unittest args]

Each test sends one command sequence to a real redis-server (Debian's 7.0)
and to featurekv (1 shard, then 4 shards, so cross-shard RENAME, COPY and
MSETNX are exercised) over raw RESP, and compares the decoded replies,
error texts included. Also here: glob patterns that used to freeze a shard
(KEYS, SCAN MATCH, HSCAN MATCH while another client's PINGs are answered),
SIGTERM while a shard is busy in a long command, RANDOMKEY's spread, and
RENAME/COPY of entity keys (featurekv only: feature state moves whole).
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fkv_testlib import RawClient, RedisServer, RespError, ServerProcess, encode_command, wait_until  # noqa: E402

SERVER_BINARY = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 and not sys.argv[1].startswith("-")
                                else os.path.join(HERE, "..", "..", "build", "server", "featurekv-server"))
REGISTRY = os.path.normpath(os.path.join(HERE, "..", "..", "conf", "features.yaml"))

REDIS = None  # the module's redis-server


def setUpModule():
    global REDIS
    REDIS = RedisServer()


def tearDownModule():
    if REDIS is not None:
        REDIS.stop()


def event(user, product, action, ts_s):
    return json.dumps({"user_id": user, "product_id": product, "action": action, "timestamp": ts_s})


class ParityTests:
    """Mixed into one TestCase per shard count."""

    SHARDS = 1
    fkv = None

    @classmethod
    def setUpClass(cls):
        cls.fkv = ServerProcess(SERVER_BINARY, shards=cls.SHARDS, directives=[("registry", REGISTRY), ("save", "")]).start()

    @classmethod
    def tearDownClass(cls):
        if cls.fkv is not None:
            cls.fkv.stop()

    def setUp(self):
        self.rc = RawClient(REDIS.port, timeout=10)
        self.fc = RawClient(self.fkv.port, timeout=10)
        self.addCleanup(self.rc.close)
        self.addCleanup(self.fc.close)
        for c in (self.rc, self.fc):
            self.assertEqual(c.command("FLUSHALL"), "OK")

    def tearDown(self):
        self.assertTrue(self.fkv.alive(), "featurekv died:\n" + self.fkv.diagnostics())

    # -- helpers -------------------------------------------------------------

    def both(self, *args):
        """Runs one command on both servers; returns (redis, featurekv)."""
        return self.rc.command(*args), self.fc.command(*args)

    def same(self, *args):
        """Asserts both servers reply the same; returns the reply."""
        want, got = self.both(*args)
        self.assertEqual(got, want, "reply to %r: redis %r, featurekv %r" % (args, want, got))
        return got

    def same_all(self, commands):
        for cmd in commands:
            self.same(*cmd)

    def keys_on_many_shards(self, prefix, n=16):
        """n key names: with 4 shards, pairs of them land on different shards."""
        return ["%s%d" % (prefix, i) for i in range(n)]

    # -- GETEX GETSET --------------------------------------------------------

    def test_getex_matches_redis(self):
        self.same_all([
            ("SET", "k", "v"), ("GETEX", "k"), ("TTL", "k"),
            ("GETEX", "k", "EX", "100"), ("TTL", "k"),
            ("GETEX", "k", "PX", "200000"), ("TTL", "k"),
            ("GETEX", "k", "PERSIST"), ("TTL", "k"),
            ("GETEX", "k", "EXAT", str(int(time.time()) + 300)), ("TTL", "k"),
            ("GETEX", "k", "EX", "0"), ("GETEX", "k", "EX", "-1"), ("GETEX", "k", "PX", "0"),
            ("GETEX", "k", "EX", "abc"), ("GETEX", "k", "EX", "10", "PX", "10"), ("GETEX", "k", "PERSIST", "EX", "10"),
            ("GETEX", "k", "EX", "10", "PERSIST"), ("GETEX", "k", "EX"), ("GETEX", "k", "FOO"),
            ("GETEX", "k", "EX", "9223372036854775807"), ("GETEX", "k", "PX", "9223372036854775807"),
            ("TTL", "k"), ("GETEX", "k", "EXAT", "1"), ("EXISTS", "k"),
            ("GETEX", "missing"), ("GETEX", "missing", "EX", "10"), ("EXISTS", "missing"),
            ("HSET", "h", "f", "v"), ("GETEX", "h"), ("GETEX",),
        ])

    def test_getset_matches_redis(self):
        self.same_all([
            ("SET", "k", "v", "EX", "100"), ("GETSET", "k", "w"), ("GET", "k"), ("TTL", "k"),
            ("GETSET", "new", "x"), ("GET", "new"),
            ("HSET", "h", "f", "v"), ("GETSET", "h", "v"), ("HGET", "h", "f"),
            ("GETSET", "k"), ("GETSET", "k", "a", "b"),
        ])

    # -- MULTI / EXEC ----------------------------------------------------------

    def test_transactions_match_redis(self):
        keys = self.keys_on_many_shards("t", 8)
        mset = ["MSET"]
        for k in keys:
            mset += [k, k.upper()]
        self.same_all([
            ("EXEC",), ("DISCARD",), ("MULTI",), ("MULTI",), ("SET", "a", "1"), ("INCR", "a"), tuple(mset),
            ("MGET", *keys), ("DEL", "a", keys[1]), ("GET", "a"), ("EXEC",),
            ("MULTI",), ("SET", "x", "1"), ("GET",), ("NOSUCHCMD", "q"), ("EXEC",), ("GET", "x"),
            ("MULTI",), ("SET", "y", "1"), ("DISCARD",), ("GET", "y"),
            ("MULTI",), ("HSET", "h", "f", "v"), ("GET", "h"), ("HGET", "h", "f"), ("EXEC",),
            ("WATCH", "w"), ("MULTI",), ("WATCH", "w"), ("SET", "w", "1"), ("EXEC",), ("GET", "w"),
            ("WATCH", "w", keys[2], keys[3]), ("SET", "w", "2"), ("MULTI",), ("GET", "w"), ("EXEC",),
            ("WATCH", keys[4]), ("UNWATCH",), ("SET", keys[4], "changed"), ("MULTI",), ("GET", keys[4]), ("EXEC",),
            ("MULTI",), ("SAVE",), ("EXEC",),
            ("MULTI",), ("EXEC", "extra"), ("EXEC",),
            ("MULTI",), ("RENAME", keys[5], keys[6]), ("EXISTS", keys[5], keys[6]), ("EXEC",),
            ("MULTI",), ("EXEC",),
        ])

    # -- MSETNX ---------------------------------------------------------------

    def test_msetnx_matches_redis(self):
        keys = self.keys_on_many_shards("m")
        args = []
        for k in keys[:8]:
            args += [k, "v" + k]
        self.same("MSETNX", *args)
        self.same("MGET", *keys)
        self.same("MSETNX", keys[8], "x", keys[0], "y")  # one exists: nothing is set
        self.same("MGET", *keys)
        self.same("MSETNX", keys[9], "1", keys[9], "2")  # a key named twice: the last value
        self.same("GET", keys[9])
        self.same("MSETNX", "a")
        self.same("MSETNX", "a", "1", "b")
        self.same("HSET", "h", "f", "v")
        self.same("MSETNX", "h", "1", "z", "2")  # a hash counts as existing
        self.same("EXISTS", "z")

    # -- GETRANGE SETRANGE ----------------------------------------------------

    def test_getrange_matches_redis(self):
        self.same("SET", "s", "Hello World")
        for start, end in [(0, 4), (-5, -1), (5, 3), (-1, -5), (0, -1), (0, 100), (100, 200), (-100, -90),
                           (-100, 2), (3, -100), (-1, -1), (10, 10), (11, 11), (-11, 0), (0, 0),
                           ("9223372036854775807", "9223372036854775807"), ("-9223372036854775808", "-1")]:
            self.same("GETRANGE", "s", str(start), str(end))
        self.same("SET", "empty", "")
        self.same("GETRANGE", "empty", "0", "-1")
        self.same("GETRANGE", "missing", "0", "-1")
        self.same("GETRANGE", "s", "a", "1")
        self.same("GETRANGE", "s", "0", "1.5")
        self.same("HSET", "h", "f", "v")
        self.same("GETRANGE", "h", "0", "1")
        self.same("GETRANGE", "s", "0")
        self.same("SET", "n", "12345")
        self.same("GETRANGE", "n", "1", "3")

    def test_setrange_matches_redis(self):
        self.same_all([
            ("SETRANGE", "missing", "0", ""), ("EXISTS", "missing"),
            ("SETRANGE", "missing", "5", ""), ("EXISTS", "missing"),
            ("SETRANGE", "z", "5", "x"), ("GET", "z"), ("STRLEN", "z"),
            ("SET", "k", "Hello World", "EX", "100"), ("SETRANGE", "k", "6", "Redis"), ("GET", "k"), ("TTL", "k"),
            ("SETRANGE", "k", "20", "tail"), ("GET", "k"), ("SETRANGE", "k", "0", ""), ("GET", "k"),
            ("SETRANGE", "k", "-1", "x"), ("SETRANGE", "k", "abc", "x"),
            ("SETRANGE", "k", "536870911", "xx"), ("SETRANGE", "k", "536870912", ""),
            ("SETRANGE", "missing", "536870911", "xx"), ("EXISTS", "missing"),
            ("SET", "n", "1234"), ("SETRANGE", "n", "1", "x"), ("GET", "n"), ("INCR", "n"),
            ("HSET", "h", "f", "v"), ("SETRANGE", "h", "0", "x"), ("SETRANGE", "h", "0", ""),
            ("SETRANGE", "k", "0"),
        ])

    # -- RENAME RENAMENX COPY -------------------------------------------------

    def test_rename_matches_redis(self):
        keys = self.keys_on_many_shards("r")
        self.same_all([
            ("RENAME", "missing", "x"), ("RENAMENX", "missing", "x"),
            ("SET", "a", "1"), ("RENAME", "a", "a"), ("RENAMENX", "a", "a"), ("GET", "a"),
            ("RENAME", "a"), ("RENAME", "a", "b", "c"),
        ])
        for i in range(0, len(keys) - 1, 2):
            src, dst = keys[i], keys[i + 1]
            self.same_all([
                ("SET", src, "v" + src, "EX", "1000"), ("RENAME", src, dst), ("EXISTS", src), ("GET", dst),
                ("TTL", dst),
                ("HSET", src, "f", "1", "g", "2"), ("RENAMENX", src, dst), ("HGETALL", src), ("GET", dst),
                ("RENAME", src, dst), ("TYPE", dst), ("HGETALL", dst), ("EXISTS", src), ("TTL", dst),
                ("RENAMENX", dst, src), ("HGETALL", src), ("EXISTS", dst),
            ])

    def test_copy_matches_redis(self):
        keys = self.keys_on_many_shards("c")
        self.same_all([
            ("COPY", "missing", "x"), ("SET", "a", "1"), ("COPY", "a", "a"),
            ("COPY", "a", "b", "DB", "x"), ("COPY", "a", "b", "FOO"), ("COPY", "a", "b", "DB"), ("COPY", "a"),
            ("EXISTS", "b"), ("COPY", "a", "b", "DB", "0"), ("GET", "b"),
        ])
        # featurekv has database 0 only (as SELECT): another index is refused.
        self.assertEqual(self.fc.command("COPY", "a", "c", "DB", "1"), RespError("ERR DB index is out of range"))
        self.assertEqual(self.fc.command("EXISTS", "c"), 0)
        for i in range(0, len(keys) - 1, 2):
            src, dst = keys[i], keys[i + 1]
            self.same_all([
                ("SET", src, "s" + src, "PX", "900000"), ("COPY", src, dst), ("GET", dst), ("TTL", dst),
                ("SET", src, "changed"), ("GET", dst),
                ("COPY", src, dst), ("GET", dst), ("COPY", src, dst, "REPLACE"), ("GET", dst), ("TTL", dst),
                ("DEL", src), ("HSET", src, "f", "1"), ("COPY", src, dst, "REPLACE"), ("HSET", dst, "g", "2"),
                ("HGETALL", src), ("HGETALL", dst), ("TYPE", dst),
            ])

    # -- HSCAN HRANDFIELD -----------------------------------------------------

    def hscan_all(self, client, key, *opts):
        pairs = set()
        cursor = "0"
        for _ in range(10000):
            reply = client.command("HSCAN", key, cursor, *opts)
            if isinstance(reply, RespError):
                return reply
            cursor, items = reply
            pairs.update(zip(items[0::2], items[1::2]))
            if cursor == "0":
                return sorted(pairs)
        self.fail("HSCAN did not end")

    def test_hscan_matches_redis(self):
        small = ["HSET", "small"] + [x for i in range(10) for x in ("f%d" % i, "v%d" % i)]
        big = ["HSET", "big"] + [x for i in range(300) for x in ("field:%d" % i, "value%d" % i)]
        self.same(*small)
        self.same(*big)
        for key in ("small", "big", "missing"):
            for opts in [(), ("COUNT", "3"), ("MATCH", "f1*"), ("MATCH", "field:1?"), ("MATCH", "*"),
                         ("MATCH", "*[0-2]", "COUNT", "7")]:
                self.assertEqual(self.hscan_all(self.fc, key, *opts), self.hscan_all(self.rc, key, *opts),
                                 "HSCAN %s %r" % (key, opts))
        self.same("HSCAN", "small", "0", "COUNT", "0")
        self.same("HSCAN", "small", "abc")
        self.same("HSCAN", "small", "0", "MATCH")
        self.same("HSCAN", "small", "0", "FOO", "bar")
        self.same("SET", "s", "1")
        self.same("HSCAN", "s", "0")
        self.same("HSCAN", "s")

    def test_hrandfield_matches_redis(self):
        self.same("HSET", "h", "a", "1", "b", "2", "c", "3")
        fields = {"a": "1", "b": "2", "c": "3"}
        for c in (self.rc, self.fc):
            self.assertIn(c.command("HRANDFIELD", "h"), fields)
            self.assertEqual(sorted(c.command("HRANDFIELD", "h", "5")), ["a", "b", "c"])
            two = c.command("HRANDFIELD", "h", "2")
            self.assertEqual(len(set(two)), 2)
            rep = c.command("HRANDFIELD", "h", "-7")
            self.assertEqual(len(rep), 7)
            self.assertTrue(set(rep) <= set(fields))
            flat = c.command("HRANDFIELD", "h", "-4", "WITHVALUES")
            self.assertEqual(len(flat), 8)
            for f, v in zip(flat[0::2], flat[1::2]):
                self.assertEqual(fields[f], v)
            self.assertEqual(c.command("HELLO", "3")["proto"], 3)
            nested = c.command("HRANDFIELD", "h", "3", "WITHVALUES")
            self.assertEqual(sorted(tuple(p) for p in nested), sorted(fields.items()))
            c.command("HELLO", "2")
        self.same_all([
            ("HRANDFIELD", "h", "0"), ("HRANDFIELD", "missing"), ("HRANDFIELD", "missing", "3"),
            ("HRANDFIELD", "h", "x"), ("HRANDFIELD", "h", "1", "FOO"), ("HRANDFIELD", "h", "1", "WITHVALUES", "x"),
            ("SET", "s", "1"), ("HRANDFIELD", "s"), ("HRANDFIELD", "s", "1"), ("HRANDFIELD",),
        ])

    def test_hincrbyfloat_infinite_increment_matches_redis(self):
        self.same("HSET", "h", "f", "1")
        for inc in ("+inf", "-inf", "inf", "infinity", "-Infinity", "nan", "1e5000"):
            self.same("HINCRBYFLOAT", "h", "f", inc)
            self.same("HINCRBYFLOAT", "new", "f", inc)
        self.same("EXISTS", "new")
        self.same("HGET", "h", "f")
        self.same("HSET", "h", "big", "1e4932")
        self.same("HINCRBYFLOAT", "h", "big", "1e4932")
        self.same("INCRBYFLOAT", "s", "+inf")

    # -- OBJECT MEMORY INFO CLIENT --------------------------------------------

    def test_command_getkeys_matches_redis(self):
        # Every command featurekv shares with Redis, with arguments a client
        # would send: the key arguments (what a cluster client routes on),
        # or the same error.
        calls = [
            ("GET", "a"), ("SET", "a", "1", "EX", "10"), ("MSET", "a", "1", "b", "2", "c", "3"),
            ("MSETNX", "a", "1", "b", "2"), ("MGET", "a", "b", "c"), ("DEL", "a", "b", "c"), ("UNLINK", "a"),
            ("EXISTS", "a", "b"), ("TOUCH", "a", "b"), ("RENAME", "a", "b"), ("RENAMENX", "a", "b"),
            ("COPY", "a", "b", "REPLACE"), ("EXPIRE", "a", "10", "NX"), ("PEXPIREAT", "a", "1"), ("TTL", "a"),
            ("PERSIST", "a"), ("TYPE", "a"), ("HSET", "h", "f", "v", "g", "w"), ("HMGET", "h", "f", "g"),
            ("HGETALL", "h"), ("HSCAN", "h", "0", "MATCH", "*"), ("HINCRBYFLOAT", "h", "f", "1.5"),
            ("GETEX", "a", "PERSIST"), ("GETRANGE", "a", "0", "1"), ("INCRBY", "a", "2"), ("APPEND", "a", "x"),
            ("WATCH", "a", "b"), ("OBJECT", "ENCODING", "a"), ("MEMORY", "USAGE", "a", "SAMPLES", "5"),
            # No keys, unknown command, wrong arity (of the command, and of GETKEYS itself).
            ("PING", "x"), ("CLIENT", "LIST"), ("ECHO", "x"), ("NOSUCHCMD", "a"), ("MSET", "a"), ("GET", "a", "b"),
            ("GET",), (),
        ]
        for call in calls:
            self.same("COMMAND", "GETKEYS", *call)

    def test_object_matches_redis(self):
        self.same_all([
            ("SET", "int", "12345"), ("SET", "neg", "-7"), ("SET", "zero", "0"), ("SET", "lead", "012"),
            ("SET", "short", "hello"), ("SET", "long", "x" * 45), ("SET", "edge", "y" * 44),
            ("SET", "big", "99999999999999999999"),
            ("HSET", "hs", "f", "v"),
        ])
        self.same("HSET", "hwide", *[x for i in range(513) for x in ("f%d" % i, "v")])
        self.same("HSET", "hlongval", "f", "v" * 65)
        for key in ("int", "neg", "zero", "lead", "short", "long", "edge", "big", "hs", "hwide", "hlongval", "missing"):
            self.same("OBJECT", "ENCODING", key)
            self.same("OBJECT", "REFCOUNT", key)
            self.same("OBJECT", "FREQ", key)
        self.same("SET", "small", "5")
        self.same("OBJECT", "REFCOUNT", "small")
        # Changed in place: raw, whatever the content; a new SET starts over.
        self.same_all([
            ("SET", "n", "1234"), ("SETRANGE", "n", "0", "2"), ("GET", "n"), ("OBJECT", "ENCODING", "n"),
            ("EXPIRE", "n", "100"), ("OBJECT", "ENCODING", "n"), ("SET", "n", "5678"), ("OBJECT", "ENCODING", "n"),
            ("SET", "t", "hi"), ("APPEND", "t", "!"), ("OBJECT", "ENCODING", "t"), ("SET", "t", "hey"),
            ("OBJECT", "ENCODING", "t"), ("INCR", "n"), ("OBJECT", "ENCODING", "n"),
        ])
        # The listpack bounds follow CONFIG SET, under both names.
        try:
            self.same_all([
                ("CONFIG", "SET", "hash-max-ziplist-entries", "4"), ("CONFIG", "GET", "hash-max-listpack-entries"),
                ("HSET", "h5", "a", "1", "b", "2", "c", "3", "d", "4", "e", "5"), ("OBJECT", "ENCODING", "h5"),
                ("CONFIG", "SET", "hash-max-listpack-value", "3"), ("CONFIG", "GET", "hash-max-ziplist-value"),
                ("HSET", "h2", "a", "1234"), ("OBJECT", "ENCODING", "h2"),
            ])
        finally:
            for c in (self.rc, self.fc):
                c.command("CONFIG", "SET", "hash-max-listpack-entries", "512", "hash-max-listpack-value", "64")
        self.same("OBJECT", "IDLETIME", "missing")
        for c in (self.rc, self.fc):
            self.assertIsInstance(c.command("OBJECT", "IDLETIME", "short"), int)
            help_ = c.command("OBJECT", "HELP")
            self.assertTrue(help_[0].startswith("OBJECT <subcommand>"))
        self.same("OBJECT", "ENCODING")
        self.same("OBJECT", "ENCODING", "a", "b")
        self.same("OBJECT", "FOO", "k")
        self.same("OBJECT")

    def test_memory_usage_matches_redis(self):
        self.same("SET", "s", "v" * 100)
        self.same("HSET", "h", *[x for i in range(20) for x in ("f%d" % i, "v" * 20)])
        for c in (self.rc, self.fc):
            s = c.command("MEMORY", "USAGE", "s")
            h = c.command("MEMORY", "USAGE", "h")
            self.assertIsInstance(s, int)
            self.assertGreaterEqual(s, 100)
            self.assertGreater(h, 20 * 20)
            self.assertEqual(c.command("MEMORY", "USAGE", "s", "SAMPLES", "0"), s)
            self.assertTrue(c.command("MEMORY", "HELP")[0].startswith("MEMORY <subcommand>"))
        self.same_all([
            ("MEMORY", "USAGE", "missing"), ("MEMORY", "USAGE", "s", "SAMPLES", "x"),
            ("MEMORY", "USAGE", "s", "SAMPLES", "-1"), ("MEMORY", "USAGE", "s", "FOO"),
            ("MEMORY", "USAGE", "s", "SAMPLES"), ("MEMORY", "FOO"), ("MEMORY",),
        ])

    def test_info_cpu_has_redis_fields(self):
        fields = ("used_cpu_sys", "used_cpu_user", "used_cpu_sys_children", "used_cpu_user_children",
                  "used_cpu_sys_main_thread", "used_cpu_user_main_thread")
        for section in (("cpu",), ()):
            for c in (self.rc, self.fc):
                text = c.command("INFO", *section)
                self.assertIn("# CPU", text)
                info = dict(l.split(":", 1) for l in text.splitlines() if ":" in l and not l.startswith("#"))
                for f in fields:
                    self.assertRegex(info.get(f, ""), r"^\d+\.\d{6}$", f)
        # A busy shard's CPU time grows.
        before = float(self.info_field(self.fc, "cpu", "used_cpu_user"))
        self.fc.command("SET", "k", "a" * 20000)
        self.fc.command("KEYS", "*" + "a" * 3000 + "b")  # ~50M matching steps
        wait_until(lambda: float(self.info_field(self.fc, "cpu", "used_cpu_user")) > before, timeout=10,
                   what="used_cpu_user to grow")

    def info_field(self, client, section, field):
        for line in client.command("INFO", section).splitlines():
            if line.startswith(field + ":"):
                return line.split(":", 1)[1]
        self.fail("INFO %s has no %s" % (section, field))

    def test_client_list_qbuf_matches_redis(self):
        def fields(c):
            line = c.command("CLIENT", "LIST", "ID", str(c.command("CLIENT", "ID")))
            return dict(kv.split("=", 1) for kv in line.strip().split(" "))
        r, f = fields(self.rc), fields(self.fc)
        # The command being run, as Redis counts it (ids may differ in length).
        for c, info in ((self.rc, r), (self.fc, f)):
            self.assertEqual(int(info["qbuf"]), len(encode_command("CLIENT", "LIST", "ID", info["id"])))
        self.assertGreater(int(f["qbuf-free"]), 0)
        self.assertEqual(int(f["rbs"]), int(f["qbuf"]) + int(f["qbuf-free"]) + (int(f["rbp"]) - int(f["qbuf"])))
        # Another client's half-sent command shows in its qbuf (featurekv
        # keeps the unparsed bytes of a request; Redis moves parsed
        # arguments out of its buffer, so its figure differs here).
        with RawClient(self.fkv.port) as other:
            other_id = other.command("CLIENT", "ID")
            partial = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\n01234"
            other.send(partial)

            def qbuf():
                line = self.fc.command("CLIENT", "LIST", "ID", str(other_id))
                return dict(kv.split("=", 1) for kv in line.strip().split(" "))["qbuf"] == str(len(partial))
            wait_until(qbuf, timeout=5, what="qbuf=%d for a half-sent command" % len(partial))

    # -- SLOWLOG, INFO commandstats / latencystats ---------------------------

    def test_slowlog_matches_redis(self):
        for c in (self.rc, self.fc):
            self.addCleanup(c.command, "CONFIG", "SET", "slowlog-log-slower-than", "10000")
            self.assertEqual(c.command("CLIENT", "SETNAME", "slowpoke"), "OK")
        self.same("CONFIG", "SET", "slowlog-log-slower-than", "0")  # every command is slow
        self.same("SLOWLOG", "RESET")
        keys = self.keys_on_many_shards("sl", 40)
        script = [["SET", "k", "v" * 300], ["GET", "k"], ["DEL"] + keys, ["AUTH", "secret-password"],
                  ["HSET", "k", "f", "v"], ["MGET", "k", "k2"], ["GET"]]  # the last one is refused: never logged
        for cmd in script:
            self.both(*cmd)
        r, f = self.both("SLOWLOG", "GET", "-1")
        self.assertEqual([e[3] for e in f], [e[3] for e in r])
        # What Redis cuts: 32 arguments at most, 128 bytes each; passwords redacted.
        args = {e[3][0].lower(): e[3] for e in f}
        self.assertEqual(len(args["del"]), 32)
        self.assertEqual(args["del"][-1], "... (10 more arguments)")  # 41 arguments: 31 kept
        self.assertEqual(args["set"][2], "v" * 128 + "... (172 more bytes)")
        self.assertEqual(args["auth"], ["AUTH", "(redacted)"])
        now = time.time()
        for e in f:
            self.assertEqual(len(e), 6)
            self.assertTrue(isinstance(e[0], int) and isinstance(e[2], int) and e[2] >= 0)
            self.assertLessEqual(abs(e[1] - now), 60)
            self.assertRegex(e[4], r"^127\.0\.0\.1:\d+$")
            self.assertEqual(e[5], "slowpoke")
        self.assertEqual([e[0] for e in f], sorted((e[0] for e in f), reverse=True))  # newest first
        r2, f2 = self.both("SLOWLOG", "GET", "2")
        self.assertEqual([e[3] for e in f2], [e[3] for e in r2])
        self.assertEqual(len(f2), 2)
        self.same("SLOWLOG", "LEN")
        self.same("CONFIG", "SET", "slowlog-max-len", "3")
        self.addCleanup(self.fc.command, "CONFIG", "SET", "slowlog-max-len", "128")
        self.addCleanup(self.rc.command, "CONFIG", "SET", "slowlog-max-len", "128")
        self.both("PING")
        self.same("SLOWLOG", "LEN")
        r3, f3 = self.both("SLOWLOG", "GET", "-1")
        self.assertEqual([e[3] for e in f3], [e[3] for e in r3])
        self.same_all([["SLOWLOG", "GET", "-2"], ["SLOWLOG", "GET", "x"], ["SLOWLOG", "GET", "1", "2"],
                       ["SLOWLOG", "LEN", "x"], ["SLOWLOG", "RESET", "x"], ["SLOWLOG", "NOPE"], ["SLOWLOG", "HELP"]])
        self.same("CONFIG", "SET", "slowlog-log-slower-than", "-1")  # off
        self.same("SLOWLOG", "RESET")
        self.both("GET", "k")
        self.same("SLOWLOG", "LEN")
        self.assertEqual(self.fc.command("SLOWLOG", "LEN"), 0)

    def test_commandstats_and_latencystats_match_redis(self):
        def stats(c, section):
            text = c.command("INFO", section)
            out = {}
            for line in text.splitlines():
                if ":" in line and not line.startswith("#"):
                    name, rest = line.split(":", 1)
                    out[name] = dict(kv.split("=", 1) for kv in rest.split(","))
            return out
        self.same("CONFIG", "RESETSTAT")
        for cmd in (["SET", "a", "1"], ["GET", "a"], ["GET", "a"], ["GET"], ["HSET", "a", "f", "v"], ["INCR", "a"]):
            self.same(*cmd)
        r, f = stats(self.rc, "commandstats"), stats(self.fc, "commandstats")
        for name in ("cmdstat_set", "cmdstat_get", "cmdstat_hset", "cmdstat_incr"):
            self.assertEqual(sorted(f[name]), sorted(r[name]), name)  # the same fields
            for k in ("calls", "rejected_calls", "failed_calls"):
                self.assertEqual(f[name][k], r[name][k], "%s %s" % (name, k))
            self.assertRegex(f[name]["usec"], r"^\d+$")
            self.assertRegex(f[name]["usec_per_call"], r"^\d+\.\d\d$")
        self.assertEqual(f["cmdstat_get"]["rejected_calls"], "1")
        self.assertEqual(f["cmdstat_hset"]["failed_calls"], "1")
        r, f = stats(self.rc, "latencystats"), stats(self.fc, "latencystats")
        for name in ("latency_percentiles_usec_set", "latency_percentiles_usec_get"):
            self.assertEqual(list(f[name]), list(r[name]), name)  # p50, p99, p99.9 in this order
            for v in f[name].values():
                self.assertRegex(v, r"^\d+\.\d{3}$")
            self.assertLessEqual(float(f[name]["p50"]), float(f[name]["p99.9"]))
        self.same("CONFIG", "SET", "latency-tracking-info-percentiles", "50 90")
        self.addCleanup(self.fc.command, "CONFIG", "SET", "latency-tracking-info-percentiles", "50 99 99.9")
        self.addCleanup(self.rc.command, "CONFIG", "SET", "latency-tracking-info-percentiles", "50 99 99.9")
        self.assertEqual(list(stats(self.fc, "latencystats")["latency_percentiles_usec_get"]), ["p50", "p90"])
        self.same("CONFIG", "GET", "latency-tracking-info-percentiles")
        # Neither section is in the default INFO; both are in INFO everything.
        for c in (self.rc, self.fc):
            self.assertNotIn("# Commandstats", c.command("INFO"))
            everything = c.command("INFO", "everything")
            self.assertIn("# Commandstats", everything)
            self.assertIn("# Latencystats", everything)
        self.same("CONFIG", "RESETSTAT")
        self.assertNotIn("cmdstat_get", stats(self.fc, "commandstats"))

    # -- the same through redis-py's methods and redis-cli ---------------------

    def test_redis_py_methods_agree(self):
        import redis
        rr = redis.Redis(port=REDIS.port, decode_responses=True)
        fr = self.fkv.redis()
        self.addCleanup(rr.close)
        self.addCleanup(fr.close)

        def run(r):
            out = [r.set("k", "Hello World"), r.getex("k", ex=100), r.ttl("k"), r.getex("k", persist=True), r.ttl("k"),
                   r.getset("k", "v2"), r.getrange("k", 0, 0), r.setrange("k", 3, "xyz"), r.get("k"),
                   r.msetnx({"m1": "1", "m2": "2"}), r.msetnx({"m2": "x", "m3": "3"}), r.mget("m1", "m2", "m3"),
                   r.rename("m1", "m9"), r.renamenx("m9", "m2"), r.copy("m9", "m8"), r.get("m8"),
                   r.hset("h", mapping={"a": "1", "b": "2"}), r.hscan("h"), sorted(r.hrandfield("h", 2)),
                   r.object("encoding", "k"), r.object("refcount", "m2"), isinstance(r.memory_usage("k"), int),
                   r.memory_usage("missing")]
            for bad in (lambda: r.getex("h"), lambda: r.rename("nope", "x"), lambda: r.copy("k", "k")):
                try:
                    bad()
                    out.append("no error")
                except redis.ResponseError as e:
                    out.append(str(e))
            return out
        self.assertEqual(run(fr), run(rr))

    def test_redis_cli_agrees(self):
        exe = shutil.which("redis-cli")
        self.assertIsNotNone(exe, "redis-cli is not installed (scripts/setup-deps.sh installs it)")
        script = [["SET", "k", "Hello"], ["GETEX", "k", "PX", "50000"], ["GETRANGE", "k", "1", "-2"],
                  ["SETRANGE", "k", "10", "x"], ["GET", "k"], ["GETSET", "k", "1"], ["OBJECT", "ENCODING", "k"],
                  ["MSETNX", "a", "1", "b", "2"], ["RENAMENX", "a", "b"], ["RENAME", "a", "c"], ["COPY", "c", "d"],
                  ["HSET", "h", "f", "v"], ["HSCAN", "h", "0"], ["HRANDFIELD", "h", "-2", "WITHVALUES"],
                  ["HINCRBYFLOAT", "h", "g", "inf"], ["GETEX", "h"], ["OBJECT", "FREQ", "k"], ["MEMORY", "USAGE", "zz"],
                  ["OBJECT", "NOPE", "k"], ["RANDOMKEY", "x"]]
        outs = []
        for port in (REDIS.port, self.fkv.port):
            text = []
            for cmd in script:
                p = subprocess.run([exe, "-h", "127.0.0.1", "-p", str(port)] + cmd, capture_output=True, text=True,
                                   timeout=20)
                text.append(" ".join(cmd) + " -> " + p.stdout.strip() + p.stderr.strip())
            outs.append(text)
        self.assertEqual(outs[1], outs[0])

    def test_entity_keys_are_wrongtype_for_string_and_hash_commands(self):
        now = int(time.time())
        self.assertEqual(self.fc.command("FEVENT", "user_events", event(1, 2, "click", now)), 1)
        wrong = RespError("WRONGTYPE Operation against a key holding the wrong kind of value")
        for cmd in (("GETEX", "user:1"), ("GETSET", "user:1", "x"), ("GETRANGE", "user:1", "0", "1"),
                    ("SETRANGE", "user:1", "0", "x"), ("HSCAN", "user:1", "0"), ("HRANDFIELD", "user:1"),
                    ("HINCRBYFLOAT", "user:1", "f", "1")):
            self.assertEqual(self.fc.command(*cmd), wrong, cmd)
        self.assertEqual(self.fc.command("MSETNX", "user:1", "x", "other", "y"), 0)
        self.assertEqual(self.fc.command("EXISTS", "other"), 0)
        self.assertEqual(self.fc.command("FGET", "user:1", "clicks_1h"), [1])
        self.assertEqual(self.fc.command("OBJECT", "REFCOUNT", "user:1"), 1)

    # -- KEYS SCAN glob: Redis's semantics, bounded time ----------------------

    def test_keys_patterns_match_redis(self):
        rng = random.Random(7)
        names = set()
        alphabet = "ab-]^\\*?[xy"
        for _ in range(300):
            names.add("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))))
        names |= {"user:1", "user:22", "product:7", "hello", "hallo", "hxllo", "h\xe9llo"}
        names = sorted(names)
        args = []
        for n in names:
            args += [n, "1"]
        self.same("MSET", *args)
        patterns = ["*", "user:*", "h?llo", "h[ae]llo", "h[^e]llo", "h[a-b]llo", "*[", "*\\*", "a[bc", "[^",
                    "a*b*", "*]*", "[]a]*", "[a-]*", "\\a*", "*\\", "[\\]]*", "?", "??", "*?*?*"]
        for _ in range(200):
            patterns.append("".join(rng.choice("ab*?[]^-\\x") for _ in range(rng.randint(1, 7))))
        for p in patterns:
            want, got = self.both("KEYS", p)
            self.assertEqual(sorted(got), sorted(want), "KEYS %r" % p)

    def assert_pings_answered_during(self, slow_command, timeout=30):
        """Runs slow_command through redis-py on its own connection while
        another redis-py client's PINGs are answered; returns the reply."""
        result = {}

        def run():
            r = self.fkv.redis(socket_timeout=timeout)
            try:
                result["reply"] = r.execute_command(*slow_command)
            finally:
                r.close()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        pinger = self.fkv.redis(socket_timeout=5)
        self.addCleanup(pinger.close)
        pings = 0
        while t.is_alive() and pings < 100000:
            self.assertTrue(pinger.ping())
            pings += 1
        t.join(timeout)
        self.assertFalse(t.is_alive(), "%r did not finish within %ds" % (slow_command[:2], timeout))
        return result["reply"]

    def test_adversarial_patterns_do_not_freeze_a_shard(self):
        self.fc.command("SET", "a" * 40, "1")
        self.fc.command("HSET", "h", "a" * 40, "1")
        self.fc.command("MSET", *[x for i in range(2000) for x in ("%s:%d" % ("a" * 30, i), "1")])
        nasty = ["a*" * 20 + "b", "*a" * 50 + "b", "a*" * 500 + "b", "*?" * 300 + "b", "*[a-c]" * 200 + "d",
                 "*\\a" * 200 + "b", "a**" * 300 + "b"]
        for p in nasty:
            self.assertEqual(self.assert_pings_answered_during(("KEYS", p)), [])
            cursor, count = "0", 0
            for count in range(100000):
                cursor, batch = self.assert_pings_answered_during(("SCAN", cursor, "MATCH", p, "COUNT", "500"))
                self.assertEqual(batch, [])
                if int(cursor) == 0:
                    break
            self.assertEqual(int(cursor), 0)
            self.assertEqual(self.assert_pings_answered_during(("HSCAN", "h", "0", "MATCH", p)), (0, {}))
        # The report's case, at Redis's pace.
        self.same("SET", "a" * 40, "1")
        self.same("KEYS", "a*" * 20 + "b")

    # -- RANDOMKEY --------------------------------------------------------------

    def test_randomkey_returns_every_key(self):
        self.assertIsNone(self.fc.command("RANDOMKEY"))
        for keys, calls in ((["foo", "bar"], 100), (["k%d" % i for i in range(8)], 400)):
            self.fc.command("FLUSHALL")
            self.fc.command("MSET", *[x for k in keys for x in (k, "1")])
            seen = {}
            for _ in range(calls):
                k = self.fc.command("RANDOMKEY")
                seen[k] = seen.get(k, 0) + 1
            self.assertEqual(set(seen), set(keys), "RANDOMKEY over %d calls: %r" % (calls, seen))
        # Roughly uniform across shards: with 4 keys x 100 calls, no key is
        # (almost) never or (almost) always returned.
        self.fc.command("FLUSHALL")
        self.fc.command("MSET", "a", "1", "b", "1", "c", "1", "d", "1")
        counts = {}
        for _ in range(400):
            k = self.fc.command("RANDOMKEY")
            counts[k] = counts.get(k, 0) + 1
        for k in "abcd":
            self.assertGreater(counts.get(k, 0), 40, counts)
        # Expired keys are never returned (waiting on the server's clock, so
        # the expired keys are still in the table unless active expiry got them).
        self.fc.command("FLUSHALL")
        self.fc.command("SET", "live", "1")
        for i in range(20):
            self.fc.command("SET", "gone%d" % i, "1", "PX", "30")

        def server_ms():
            s, us = self.fc.command("TIME")
            return int(s) * 1000 + int(us) // 1000
        after = server_ms() + 60
        wait_until(lambda: server_ms() > after, timeout=5, what="the keys' expiry time to pass")
        for _ in range(50):
            self.assertEqual(self.fc.command("RANDOMKEY"), "live")

    # -- entity keys: feature state moves and copies whole --------------------

    def fget(self, key):
        return self.fc.command("FGET", key, "clicks_1h", "products_1h", "last_action", "recent_products")

    def test_rename_and_copy_keep_entity_state(self):
        now = int(time.time())
        users = list(range(1, 13))
        evs = [event(u, 100 + i, "click", now - i) for u in users for i in range(u)]
        self.assertEqual(self.fc.command("FEVENT", "user_events", *evs), len(evs))
        states = {u: self.fget("user:%d" % u) for u in users}
        self.assertEqual(states[3][0], 3)
        mem = self.fc.command("MEMORY", "USAGE", "user:12")
        self.assertGreater(mem, self.fc.command("MEMORY", "USAGE", "user:1"))
        self.assertEqual(self.fc.command("OBJECT", "ENCODING", "user:12"), "entity")
        ttl = self.fc.command("TTL", "user:1")
        self.assertGreater(ttl, 6 * 86400)
        # RENAME moves it (to keys that, with 4 shards, live elsewhere).
        for u in users:
            self.assertEqual(self.fc.command("RENAME", "user:%d" % u, "user:%d" % (u + 1000)), "OK")
            self.assertEqual(self.fget("user:%d" % (u + 1000)), states[u])
            self.assertEqual(self.fget("user:%d" % u), [None, None, None, None])  # an unknown entity
            self.assertEqual(self.fc.command("TYPE", "user:%d" % (u + 1000)), "feature")
            self.assertAlmostEqual(self.fc.command("TTL", "user:%d" % (u + 1000)), ttl, delta=5)
        # New events keep adding to the moved state.
        self.assertEqual(self.fc.command("FEVENT", "user_events", event(1001, 999, "click", now)), 1)
        self.assertEqual(self.fget("user:1001")[0], states[1][0] + 1)
        # COPY is deep: the copy and the original change independently.
        self.assertEqual(self.fc.command("COPY", "user:1005", "user:2005"), 1)
        self.assertEqual(self.fget("user:2005"), states[5])
        self.assertEqual(self.fc.command("FEVENT", "user_events", event(2005, 7, "purchase", now)), 1)
        self.assertEqual(self.fc.command("FGET", "user:2005", "last_action"), ["purchase"])
        self.assertEqual(self.fget("user:1005"), states[5])
        self.assertEqual(self.fc.command("COPY", "user:1005", "user:2005"), 0)
        self.assertEqual(self.fc.command("COPY", "user:1005", "user:2005", "REPLACE"), 1)
        self.assertEqual(self.fget("user:2005"), states[5])
        # RENAMENX onto an existing entity refuses and keeps both.
        self.assertEqual(self.fc.command("RENAMENX", "user:1006", "user:2005"), 0)
        self.assertEqual(self.fget("user:1006"), states[6])
        # Another entity type, or a plain name, is refused and changes nothing.
        for bad in ("product:1", "plain"):
            for cmd in ("RENAME", "COPY"):
                reply = self.fc.command(cmd, "user:1007", bad)
                self.assertIsInstance(reply, RespError)
                self.assertIn("entity 'user'", reply.message)
                self.assertEqual(self.fc.command("EXISTS", bad), 0)
        self.assertEqual(self.fget("user:1007"), states[7])
        # A plain key renamed over an entity key replaces it.
        self.assertEqual(self.fc.command("SET", "plainkey", "x"), "OK")
        self.assertEqual(self.fc.command("RENAME", "plainkey", "user:1008"), "OK")
        self.assertEqual(self.fc.command("TYPE", "user:1008"), "string")
        self.assertEqual(self.fc.command("INFO", "ingest").count("entities:"), 1)


class OneShard(ParityTests, unittest.TestCase):
    SHARDS = 1


class FourShards(ParityTests, unittest.TestCase):
    SHARDS = 4


class SigtermWhileBusy(unittest.TestCase):
    """A shard stuck in one long command must not keep the process alive."""

    def test_sigterm_exits_while_a_shard_runs_a_long_command(self):
        srv = ServerProcess(SERVER_BINARY, shards=2, directives=[("shutdown-timeout", "2")]).start()
        try:
            with RawClient(srv.port, timeout=10) as c:
                for i in range(4):  # each match costs ~1e10 steps: minutes in all
                    self.assertEqual(c.command("SET", "%d%s" % (i, "a" * 200000), "1"), "OK")
            busy = RawClient(srv.port, timeout=10)
            self.addCleanup(busy.close)
            busy.send(b"*2\r\n$4\r\nKEYS\r\n$100002\r\n*" + b"a" * 100000 + b"b\r\n")
            # Wait until the KEYS holds the shards: a PING on a fresh connection goes unanswered.
            def stuck():
                try:
                    with RawClient(srv.port, timeout=0.5) as p:
                        p.command("PING")
                        return False
                except OSError:
                    return True
            wait_until(stuck, timeout=20, what="the KEYS to occupy the shards")
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            rc = srv.wait_exit(30)
            self.assertIsNotNone(rc, "featurekv still running 30 s after SIGTERM:\n" + srv.diagnostics())
            self.assertEqual(rc, 1)
            self.assertLess(time.monotonic() - t0, 20)
            self.assertIn("shutdown-timeout", srv.log_text())
        finally:
            srv.kill()

    def test_sigterm_on_an_idle_server_still_exits_cleanly(self):
        srv = ServerProcess(SERVER_BINARY, shards=2, directives=[("shutdown-timeout", "1")]).start()
        with RawClient(srv.port) as c:
            self.assertEqual(c.command("SET", "k", "v"), "OK")
        srv.stop()  # asserts exit code 0


if __name__ == "__main__":
    unittest.main(verbosity=2)
