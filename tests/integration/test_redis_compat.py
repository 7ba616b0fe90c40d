#!/usr/bin/python3
"""Redis-compatibility integration tests for featurekv-server.

Run:  /usr/bin/python3 test_redis_compat.py [SERVER_BINARY] [unittest args]
The binary comes from argv[1], else $FKV_SERVER, else
../../build/server/featurekv-server relative to this file. Debian's
python3-redis (4.3.4) is importable from /usr/bin/python3 only.

Every test runs twice: against a server with 1 shard and with 4 shards
(ShardedCompatTest), so the cross-shard fan-out of MGET/MSET/DEL/EXISTS/
SCAN/KEYS/DBSIZE is exercised. Expected texts are Redis 7's (checked
against redis-server 7.0.15) unless docs/commands.md says otherwise.
"""

import contextlib
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fkv_testlib import (RawClient, RespError, RespMap, ServerProcess, Verbatim,  # noqa: E402
                         decode_reply, encode_command, wait_until)

import redis  # noqa: E402  (python3-redis, Debian)

DEFAULT_BINARY = os.path.normpath(os.path.join(HERE, "..", "..", "build", "server", "featurekv-server"))
SERVER_BINARY = os.environ.get("FKV_SERVER") or DEFAULT_BINARY

# Every Redis command docs/commands.md lists.
SPEC_COMMANDS = [
    "ping", "echo", "hello", "auth", "select", "quit", "reset", "client", "command", "info", "config",
    "dbsize", "time", "flushdb", "flushall", "save", "bgsave", "lastsave", "shutdown", "slowlog",
    "exists", "del", "unlink", "type", "expire", "pexpire", "expireat", "ttl", "pttl", "persist",
    "scan", "keys", "get", "set", "mget", "mset", "incr", "incrby", "incrbyfloat",
    "hset", "hget", "hmget", "hgetall", "hdel", "hlen", "hexists", "hincrby",
]

ERR_WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
ERR_NOT_INT = "ERR value is not an integer or out of range"
ERR_SYNTAX = "ERR syntax error"
ERR_NOAUTH = "NOAUTH Authentication required."
ERR_WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."


def wrong_args(cmd):
    return "ERR wrong number of arguments for '%s' command" % cmd


def pairs_to_dict(flat):
    it = iter(flat)
    return dict(zip(it, it))


class CompatTests:
    """The tests; mixed into one TestCase per shard count."""

    SHARDS = 1
    server = None

    # -- fixtures -----------------------------------------------------------

    @classmethod
    def setUpClass(cls):
        cls.server = ServerProcess(SERVER_BINARY, shards=cls.SHARDS).start()

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.stop()  # SIGTERM; asserts exit code 0

    def setUp(self):
        if not self.server.alive():
            # An earlier test crashed it (and failed for that): carry on.
            type(self).server = ServerProcess(SERVER_BINARY, shards=self.SHARDS).start()
        self.port = self.server.port
        self.r = self.server.redis()
        self.r.flushall()

    def tearDown(self):
        self.r.close()
        self.assertTrue(self.server.alive(), "server died during the test:\n" + self.server.diagnostics())

    def raw(self, server=None, timeout=5.0):
        c = RawClient((server or self.server).port, timeout=timeout)
        self.addCleanup(c.close)
        return c

    def err(self, *args):
        """Runs a command on a fresh raw connection; returns its error text."""
        reply = self.raw().command(*args)
        self.assertIsInstance(reply, RespError, "expected an error for %r, got %r" % (args, reply))
        return reply.message

    @contextlib.contextmanager
    def own_server(self, **directives):
        """A separate server with extra directives (dashes for underscores)."""
        d = [(k.replace("_", "-"), v) for k, v in directives.items()]
        srv = ServerProcess(SERVER_BINARY, shards=self.SHARDS, directives=d).start()
        try:
            yield srv
        except BaseException:
            srv.kill()
            raise
        srv.stop()  # SIGTERM (if still running); asserts exit code 0

    def assertServerAnswersPing(self, server=None):
        srv = server or self.server
        self.assertTrue(srv.alive(), "server process died:\n" + srv.diagnostics())
        self.assertTrue(srv.ping_ok(), "server does not answer PING on a fresh connection:\n" + srv.diagnostics())

    def scan_all(self, **kw):
        """Full SCAN iteration; returns the list of keys (duplicates kept)."""
        keys = []
        cursor = 0
        for _ in range(200000):
            cursor, batch = self.r.scan(cursor, **kw)
            keys.extend(batch)
            if cursor == 0:
                return keys
        self.fail("SCAN did not finish within 200000 calls")

    def mset_many(self, mapping, batch=1000):
        items = list(mapping.items())
        for i in range(0, len(items), batch):
            self.r.mset(dict(items[i:i + batch]))

    # =======================================================================
    # Connection commands

    def test_ping_replies_pong(self):
        self.assertTrue(self.r.ping())
        self.assertEqual(self.raw().raw_command("PING"), b"+PONG\r\n")

    def test_ping_with_message_replies_bulk(self):
        self.assertEqual(self.raw().raw_command("PING", "hello"), b"$5\r\nhello\r\n")

    def test_ping_with_two_arguments_is_wrong_arity(self):
        self.assertEqual(self.err("PING", "a", "b"), wrong_args("ping"))

    def test_echo_returns_its_argument(self):
        self.assertEqual(self.r.echo("hi there"), "hi there")
        self.assertEqual(self.err("ECHO"), wrong_args("echo"))

    def test_hello_without_version_keeps_resp2_and_describes_server(self):
        c = self.raw()
        raw = c.raw_command("HELLO")
        self.assertTrue(raw.startswith(b"*14\r\n"), raw)
        info = pairs_to_dict(decode_reply(raw)[0])
        self.assertEqual(info["proto"], 2)
        self.assertEqual(info["mode"], "standalone")
        self.assertEqual(info["role"], "master")
        self.assertIsInstance(info["id"], int)
        self.assertEqual(info["modules"], [])

    def test_hello_3_switches_to_resp3(self):
        c = self.raw()
        raw = c.raw_command("HELLO", "3")
        self.assertTrue(raw.startswith(b"%7\r\n"), raw)
        self.assertEqual(decode_reply(raw)[0]["proto"], 3)
        self.assertEqual(c.raw_command("GET", "missing"), b"_\r\n")

    def test_hello_rejects_unsupported_protocol(self):
        self.assertEqual(self.err("HELLO", "4"), "NOPROTO unsupported protocol version")
        self.assertEqual(self.err("HELLO", "abc"), "ERR Protocol version is not an integer or out of range")

    def test_hello_setname_names_the_connection(self):
        c = self.raw()
        c.command("HELLO", "2", "SETNAME", "hello-name")
        self.assertEqual(c.command("CLIENT", "GETNAME"), "hello-name")

    def test_auth_without_requirepass_is_an_error(self):
        self.assertEqual(self.err("AUTH", "foo"),
                         "ERR AUTH <password> called without any password configured for the default user. "
                         "Are you sure your configuration is correct?")
        self.assertEqual(self.err("AUTH", "a", "b", "c"), ERR_SYNTAX)

    def test_select_only_db_0(self):
        self.assertEqual(self.raw().command("SELECT", "0"), "OK")
        self.assertEqual(self.err("SELECT", "1"), "ERR DB index is out of range")
        self.assertEqual(self.err("SELECT", "x"), ERR_NOT_INT)

    def test_quit_replies_ok_and_closes(self):
        c = self.raw()
        c.send(encode_command("QUIT") + encode_command("PING"))
        self.assertEqual(c.read_raw_reply(), b"+OK\r\n")
        self.assertEqual(c.read_until_closed(), b"", "nothing may be answered after QUIT")

    def test_reset_restores_resp2_and_clears_name(self):
        c = self.raw()
        c.command("HELLO", "3")
        c.command("CLIENT", "SETNAME", "before-reset")
        self.assertEqual(c.raw_command("RESET"), b"+RESET\r\n")
        self.assertEqual(c.raw_command("GET", "missing"), b"$-1\r\n")
        self.assertIsNone(c.command("CLIENT", "GETNAME"))

    def test_client_id_is_a_positive_integer_unique_per_connection(self):
        a, b = self.raw().command("CLIENT", "ID"), self.raw().command("CLIENT", "ID")
        self.assertIsInstance(a, int)
        self.assertGreater(a, 0)
        self.assertNotEqual(a, b)

    def test_client_setname_and_getname(self):
        self.assertIsNone(self.r.client_getname())
        self.assertTrue(self.r.client_setname("my-conn"))
        self.assertEqual(self.r.client_getname(), "my-conn")

    def test_client_setname_rejects_spaces(self):
        self.assertEqual(self.err("CLIENT", "SETNAME", "a b"),
                         "ERR Client names cannot contain spaces, newlines or special characters.")

    def test_client_list_shows_every_connection(self):
        ids = {}
        for i in range(3):
            c = self.raw()
            c.command("CLIENT", "SETNAME", "lister-%d" % i)
            ids["lister-%d" % i] = c.command("CLIENT", "ID")
        listed = {e["name"]: int(e["id"]) for e in self.r.client_list()}
        for name, cid in ids.items():
            self.assertEqual(listed.get(name), cid)
        one = self.raw().command("CLIENT", "LIST", "ID", str(ids["lister-1"]))
        self.assertEqual(one.count("\n"), 1, one)
        self.assertIn("name=lister-1 ", one)

    def test_client_info_describes_this_connection(self):
        c = self.raw()
        c.command("CLIENT", "SETNAME", "info-conn")
        line = c.command("CLIENT", "INFO")
        self.assertTrue(line.endswith("\n"), line)
        info = dict(f.split("=", 1) for f in line.split())
        self.assertEqual(int(info["id"]), c.command("CLIENT", "ID"))
        self.assertEqual(info["name"], "info-conn")
        self.assertEqual(info["laddr"], "127.0.0.1:%d" % self.port)
        self.assertEqual(info["resp"], "2")

    def test_client_info_has_every_redis7_field(self):
        # redis-py's client_info() (parse_client_info) needs every integer
        # field of Redis 7's networking.c, argv-mem included.
        line = self.raw().command("CLIENT", "INFO")
        fields = [f.split("=", 1)[0] for f in line.split()]
        redis7 = ["id", "addr", "laddr", "fd", "name", "age", "idle", "flags", "db", "sub", "psub", "ssub",
                  "multi", "qbuf", "qbuf-free", "argv-mem", "multi-mem", "rbs", "rbp", "obl", "oll", "omem",
                  "tot-mem", "events", "cmd", "user", "redir", "resp"]
        self.assertEqual([f for f in redis7 if f not in fields], [])
        self.r.client_setname("py-info")
        self.assertEqual(self.r.client_info()["name"], "py-info")

    def test_client_kill_id_closes_that_connection(self):
        victim = self.raw()
        vid = victim.command("CLIENT", "ID")
        self.assertEqual(self.r.client_kill_filter(_id=vid), 1)
        self.assertTrue(victim.is_closed(5.0), "killed client still connected")
        self.assertEqual(self.r.client_kill_filter(_id=vid), 0)

    def test_client_kill_addr_closes_that_connection(self):
        victim = self.raw()
        addr = re.search(r"addr=(\S+)", victim.command("CLIENT", "INFO")).group(1)
        self.assertEqual(self.raw().command("CLIENT", "KILL", addr), "OK")
        self.assertTrue(victim.is_closed(5.0), "killed client still connected")
        self.assertEqual(self.err("CLIENT", "KILL", addr), "ERR No such client")

    def test_client_subcommand_arity_error_names_lowercase_subcommand(self):
        # Redis 7 names the command by its full name, `client|setname`,
        # whatever case the client sent (redis-py sends upper case).
        self.assertEqual(self.err("CLIENT", "SETNAME"), wrong_args("client|setname"))
        self.assertEqual(self.err("client", "getname", "x"), wrong_args("client|getname"))

    def test_client_unknown_subcommand(self):
        self.assertEqual(self.err("CLIENT", "foo"), "ERR unknown subcommand 'foo'. Try CLIENT HELP.")

    # =======================================================================
    # Server commands

    def test_command_count_matches_command_list_and_covers_spec(self):
        count = self.r.command_count()
        names = self.r.command_list()
        self.assertEqual(count, len(names))
        self.assertEqual(len(self.r.command()), count)
        for cmd in SPEC_COMMANDS:
            self.assertIn(cmd, names)

    def test_command_info_reports_arity_flags_and_keys(self):
        get, mset, missing = self.raw().command("COMMAND", "INFO", "get", "MSET", "nosuchcmd")
        self.assertEqual(get[:2], ["get", 2])
        self.assertIn("readonly", get[2])
        self.assertEqual(get[3:6], [1, 1, 1])
        self.assertEqual(mset[:2], ["mset", -3])
        self.assertIn("write", mset[2])
        self.assertEqual(mset[3:6], [1, -1, 2])
        self.assertIsNone(missing)
        # Redis 7 key specs (RESP2: maps as flat pairs), as redis-server 7 gives them for GET and MSET
        # but for MSET's flags (Redis: OW UPDATE; featurekv says RW UPDATE for every write).
        self.assertEqual(get[8], [["flags", ["RO", "ACCESS"], "begin_search", ["type", "index", "spec", ["index", 1]],
                                   "find_keys", ["type", "range", "spec", ["lastkey", 0, "keystep", 1, "limit", 0]]]])
        self.assertEqual(mset[8][0][2:], ["begin_search", ["type", "index", "spec", ["index", 1]],
                                          "find_keys", ["type", "range", "spec", ["lastkey", -1, "keystep", 2, "limit", 0]]])
        ping = self.raw().command("COMMAND", "INFO", "ping")[0]
        self.assertEqual(ping[8], [])  # no keys, no spec

    def test_fmget_keys_are_found_by_getkeys_not_fixed_positions(self):
        # FMGET's keys end at FEATURES: COMMAND INFO says movablekeys and
        # 0 0 0 (as Redis for XREAD), never "every argument is a key".
        info = self.raw().command("COMMAND", "INFO", "fmget")[0]
        self.assertEqual(info[:2], ["fmget", -4])
        self.assertIn("movablekeys", info[2])
        self.assertEqual(info[3:6], [0, 0, 0])
        self.assertEqual(info[8][0][2:], ["begin_search", ["type", "index", "spec", ["index", 1]],
                                          "find_keys", ["type", "unknown", "spec", []]])
        raw = self.raw()
        self.assertEqual(raw.command("COMMAND", "GETKEYS", "FMGET", "user:1", "FEATURES", "user:2", "AT", "5"),
                         ["user:1"])
        self.assertEqual(raw.command("COMMAND", "GETKEYS", "fmget", "FEATURES", "k2", "features", "f", "g"),
                         ["FEATURES", "k2"])
        self.assertEqual(raw.command("COMMAND", "GETKEYS", "FMGET", "a", "b", "c"),
                         RespError("ERR Invalid arguments specified for command"))
        self.assertEqual(raw.command("COMMAND", "GETKEYS", "FGET", "user:1", "clicks_5m"), ["user:1"])
        self.assertEqual(raw.command("COMMAND", "GETKEYS", "FEVENT", "user_events", "{}"),
                         RespError("ERR The command has no key arguments"))
        # What a cluster client routes on: redis-py's own parser asks the server.
        from redis.commands.parser import CommandsParser
        parser = CommandsParser(self.r)
        self.assertEqual(sorted(parser.get_keys(self.r, "FMGET", "user:1", "user:2", "FEATURES", "clicks_5m")),
                         ["user:1", "user:2"])
        self.assertEqual(parser.get_keys(self.r, "FGET", "user:3", "clicks_5m"), ["user:3"])

    def test_command_info_unknown_command_is_null_bulk_in_resp2(self):
        # Redis 7: addReplyNull -> "$-1" under RESP2.
        raw = self.raw().raw_command("COMMAND", "INFO", "nosuchcmd")
        self.assertEqual(raw, b"*1\r\n$-1\r\n")

    def test_command_docs_gives_summary_and_group(self):
        docs = pairs_to_dict(self.raw().command("COMMAND", "DOCS", "get", "hset"))
        self.assertEqual(set(docs), {"get", "hset"})
        get = pairs_to_dict(docs["get"])
        self.assertTrue(get["summary"])
        self.assertEqual(get["group"], "string")
        self.assertEqual(pairs_to_dict(docs["hset"])["group"], "hash")

    def info_text(self, *section):
        text = self.raw().command("INFO", *section)
        self.assertIsInstance(text, str)
        return text

    def test_info_default_has_every_section(self):
        text = self.info_text()
        for heading in ("Server", "Clients", "Memory", "Persistence", "Stats", "Ingest", "Keyspace"):
            self.assertIn("# %s\r\n" % heading, text)

    def test_info_section_returns_only_that_section(self):
        expect = {
            "server": ("Server", ["redis_version", "tcp_port", "uptime_in_seconds", "process_id"]),
            "clients": ("Clients", ["connected_clients", "maxclients"]),
            "memory": ("Memory", ["used_memory", "used_memory_human", "maxmemory"]),
            "stats": ("Stats", ["total_connections_received", "total_commands_processed", "expired_keys",
                                "keyspace_hits", "keyspace_misses"]),
            "persistence": ("Persistence", ["loading"]),
            "ingest": ("Ingest", ["events_applied", "events_rejected"]),
            "keyspace": ("Keyspace", []),
        }
        for section, (heading, fields) in expect.items():
            with self.subTest(section=section):
                text = self.info_text(section)
                self.assertEqual(re.findall(r"^# (\w+)", text, re.M), [heading], text)
                for f in fields:
                    self.assertRegex(text, r"(?m)^%s:" % f)

    def test_info_server_reports_port_and_shards(self):
        info = self.r.info("server")
        self.assertEqual(info["tcp_port"], self.port)
        self.assertEqual(info["shards"], self.SHARDS)
        self.assertEqual(info["process_id"], self.server.proc.pid)

    def test_info_keyspace_counts_keys_and_expires(self):
        self.r.mset({"ks%d" % i: i for i in range(10)})
        self.r.set("ksx", "v", ex=100)
        self.assertEqual(self.r.info("keyspace")["db0"]["keys"], 11)
        self.assertEqual(self.r.info("keyspace")["db0"]["expires"], 1)

    def test_info_unknown_section_is_empty(self):
        self.assertEqual(self.raw().raw_command("INFO", "nosuchsection"), b"$0\r\n\r\n")

    def test_config_get_returns_pairs_and_matches_globs(self):
        self.assertEqual(self.r.config_get("maxclients"), {"maxclients": "10000"})
        got = self.r.config_get("max*")
        self.assertIn("maxclients", got)
        self.assertIn("maxmemory", got)
        self.assertEqual(self.r.config_get("nosuchparam"), {})

    def test_config_get_memory_directives_in_bytes(self):
        # Redis 7 reports memory directives as plain byte counts.
        self.assertEqual(self.r.config_get("proto-max-bulk-len"), {"proto-max-bulk-len": "536870912"})
        self.assertEqual(self.r.config_get("client-query-buffer-limit"),
                         {"client-query-buffer-limit": "1073741824"})

    def test_config_set_changes_a_live_directive(self):
        try:
            self.assertTrue(self.r.config_set("maxclients", 500))
            self.assertEqual(self.r.config_get("maxclients"), {"maxclients": "500"})
            self.assertEqual(self.r.info("clients")["maxclients"], 500)
        finally:
            self.r.config_set("maxclients", 10000)

    def test_config_set_errors(self):
        self.assertEqual(self.err("CONFIG", "SET", "nosuch", "1"),
                         "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'")
        self.assertEqual(self.err("CONFIG", "SET", "port", "1"),
                         "ERR CONFIG SET failed (possibly related to argument 'port') - can't set immutable config")
        self.assertTrue(self.err("CONFIG", "SET", "maxclients", "abc").startswith(
            "ERR CONFIG SET failed (possibly related to argument 'maxclients') - "))
        self.assertEqual(self.r.config_get("maxclients"), {"maxclients": "10000"})

    def test_config_subcommand_arity_error_names_lowercase_subcommand(self):
        self.assertEqual(self.err("CONFIG", "GET"), wrong_args("config|get"))
        self.assertEqual(self.err("config", "set", "maxclients"), wrong_args("config|set"))

    def test_config_resetstat_zeroes_counters(self):
        self.r.set("rs", "1")
        for _ in range(3):
            self.r.get("rs")
        self.assertGreaterEqual(self.r.info("stats")["keyspace_hits"], 3)
        self.assertTrue(self.r.config_resetstat())
        stats = self.r.info("stats")
        self.assertEqual(stats["keyspace_hits"], 0)
        self.assertEqual(stats["keyspace_misses"], 0)
        self.assertLess(stats["total_commands_processed"], 5)

    def test_dbsize_counts_keys_across_shards(self):
        self.assertEqual(self.r.dbsize(), 0)
        self.r.mset({"db%d" % i: i for i in range(500)})
        self.r.hset("dbh", "f", "v")
        self.assertEqual(self.r.dbsize(), 501)

    def test_time_returns_seconds_and_microseconds(self):
        before = time.time()
        secs, micros = self.r.time()
        self.assertLessEqual(abs(secs + micros / 1e6 - before), 5)
        self.assertTrue(0 <= micros < 1000000)

    def test_flushdb_removes_every_key(self):
        self.r.mset({"fl%d" % i: i for i in range(100)})
        self.assertTrue(self.r.flushdb())
        self.assertEqual(self.r.dbsize(), 0)
        self.assertEqual(self.r.keys("*"), [])

    def test_flushall_removes_every_key(self):
        self.r.mset({"fa%d" % i: i for i in range(100)})
        self.r.hset("fah", mapping={"a": 1})
        self.assertTrue(self.r.flushall())
        self.assertEqual(self.r.dbsize(), 0)
        self.assertEqual(self.err("FLUSHALL", "FOO"), ERR_SYNTAX)

    def test_save_bgsave_lastsave(self):
        before = self.r.lastsave()
        self.r.set("saved", "1")
        self.assertTrue(self.r.save())
        self.assertGreaterEqual(self.r.lastsave(), before)
        self.assertTrue(self.r.bgsave())  # redis-py maps "Background saving started" to True
        self.assertTrue(self.r.bgsave(schedule=True))
        self.assertEqual(self.err("BGSAVE", "NOW"), "ERR syntax error")
        wait_until(lambda: self.r.info("persistence")["rdb_bgsave_in_progress"] == 0, 10, what="the saves to end")
        self.assertEqual(self.r.info("persistence")["rdb_last_bgsave_status"], "ok")

    def test_slowlog_get_len_reset(self):
        # Through redis-py's methods (the shapes against redis-server are in test_redis_parity.py).
        self.addCleanup(self.r.config_set, "slowlog-log-slower-than", "10000")
        self.r.config_set("slowlog-log-slower-than", "-1")  # off: nothing is logged, however slow the build
        self.assertTrue(self.r.slowlog_reset())
        self.r.set("slow", "1")
        self.assertEqual(self.r.slowlog_get(), [])
        self.assertEqual(self.r.slowlog_len(), 0)
        self.r.config_set("slowlog-log-slower-than", "0")  # every command
        self.r.set("slow", "2")
        entries = self.r.slowlog_get(10)
        commands = [e["command"].decode() if isinstance(e["command"], bytes) else e["command"] for e in entries]
        self.assertIn("SET slow 2", commands)
        self.assertGreaterEqual(self.r.slowlog_len(), 1)
        self.r.config_set("slowlog-log-slower-than", "-1")
        self.assertTrue(self.r.slowlog_reset())
        self.assertEqual(self.r.slowlog_len(), 0)
        self.assertEqual(self.err("SLOWLOG", "foo"), "ERR unknown subcommand 'foo'. Try SLOWLOG HELP.")

    def test_command_time_never_includes_waiting_for_the_client(self):
        # In a pipeline a command's time starts where the previous one's
        # ended; an idle client between two commands must not count.
        self.addCleanup(self.r.config_set, "slowlog-log-slower-than", "10000")
        self.r.config_set("slowlog-log-slower-than", "200000")  # 200 ms
        self.assertTrue(self.r.slowlog_reset())
        with self.server.raw() as c:
            self.assertEqual(c.command("SET", "idle", "1"), "OK")
            time.sleep(0.3)  # the idle gap under test (no condition to wait for)
            self.assertEqual(c.command("GET", "idle"), "1")
            c.send(b"*1\r\n$4\r\nPING\r\n" * 50)  # a pipeline: chained clock reads
            for _ in range(50):
                self.assertEqual(c.read_reply(), "PONG")
        self.assertEqual(self.r.slowlog_get(), [])
        stats = self.r.info("commandstats")["cmdstat_get"]
        self.assertLess(float(stats["usec_per_call"]), 200000)

    def test_client_setinfo_shows_in_client_list(self):
        # redis-py 4.3 (Debian 12) does not send CLIENT SETINFO itself (5.0+
        # does, on connect): send it as 5.0 would.
        r = self.server.redis()
        self.assertTrue(r.execute_command("CLIENT", "SETINFO", "LIB-NAME", "redis-py"))
        self.assertTrue(r.execute_command("CLIENT", "SETINFO", "LIB-VER", redis.__version__))
        me = r.client_id()
        mine = [c for c in self.r.client_list() if int(c["id"]) == me]
        self.assertEqual(len(mine), 1)
        self.assertEqual((mine[0]["lib-name"], mine[0]["lib-ver"]), ("redis-py", redis.__version__))
        self.assertIn("lib-name=redis-py", r.execute_command("CLIENT", "INFO"))
        with self.assertRaises(redis.ResponseError) as cm:
            r.execute_command("CLIENT", "SETINFO", "LIB-NAME", "bad\nname")
        self.assertIn("cannot contain spaces, newlines or special characters", str(cm.exception))

    def test_a_relative_registry_path_in_a_conf_file_resolves_beside_it(self):
        # The server runs in its own temporary directory; the conf file and
        # the registry are in another one.
        here = os.path.dirname(os.path.abspath(__file__))
        confdir = tempfile.mkdtemp(prefix="fkv-confdir-")
        self.addCleanup(shutil.rmtree, confdir, True)
        shutil.copy(os.path.join(here, "..", "..", "conf", "features.yaml"), os.path.join(confdir, "views.yaml"))
        with open(os.path.join(confdir, "featurekv.conf"), "w") as f:
            f.write("registry views.yaml\nsave \"\"\n")
        srv = ServerProcess(SERVER_BINARY, shards=self.SHARDS, conf=os.path.join(confdir, "featurekv.conf")).start()
        try:
            r = srv.redis()
            self.assertEqual(r.config_get("registry")["registry"], os.path.join(confdir, "views.yaml"))
            self.assertEqual(sorted(v[1] if isinstance(v, list) else v["name"] for v in r.execute_command("FVIEWS")),
                             ["product_popularity", "user_activity"])
        finally:
            srv.stop()

    def test_shutdown_stops_the_server_with_exit_code_0(self):
        with self.own_server() as srv:
            r = srv.redis()
            r.set("k", "v")
            r.shutdown()  # redis-py swallows the expected connection close
            self.assertEqual(srv.wait_exit(10.0), 0, srv.diagnostics())
            self.assertIn("shutting down", srv.log_text())

    def test_shutdown_nosave_with_clients_connected_exits_0(self):
        with self.own_server() as srv:
            others = [RawClient(srv.port) for _ in range(5)]
            try:
                for c in others:
                    c.command("SET", "key-%d" % id(c), "v")
                c = RawClient(srv.port)
                c.send(encode_command("SHUTDOWN", "NOSAVE"))
                self.assertEqual(c.read_until_closed(10.0), b"")
                self.assertEqual(srv.wait_exit(10.0), 0, srv.diagnostics())
            finally:
                for o in others:
                    o.close()

    def test_shutdown_with_bad_option_is_syntax_error(self):
        self.assertEqual(self.err("SHUTDOWN", "FOO"), ERR_SYNTAX)
        self.assertServerAnswersPing()

    # =======================================================================
    # Keys

    def test_exists_counts_each_argument_across_shards(self):
        self.r.mset({"ex%d" % i: i for i in range(50)})
        self.assertEqual(self.r.exists(*["ex%d" % i for i in range(60)]), 50)
        self.assertEqual(self.r.exists("ex1", "ex1", "nope"), 2)

    def test_del_counts_deleted_keys_across_shards(self):
        self.r.mset({"del%d" % i: i for i in range(100)})
        self.r.hset("delh", "f", "v")
        keys = ["del%d" % i for i in range(120)] + ["delh", "del1"]
        self.assertEqual(self.r.delete(*keys), 101)
        self.assertEqual(self.r.dbsize(), 0)
        self.assertEqual(self.r.delete("del1"), 0)

    def test_unlink_deletes_keys(self):
        self.r.mset({"ul%d" % i: i for i in range(20)})
        self.assertEqual(self.r.unlink(*["ul%d" % i for i in range(25)]), 20)
        self.assertEqual(self.r.dbsize(), 0)

    def test_type_reports_string_hash_none(self):
        self.r.set("ts", "v")
        self.r.hset("th", "f", "v")
        self.assertEqual(self.r.type("ts"), "string")
        self.assertEqual(self.r.type("th"), "hash")
        self.assertEqual(self.r.type("nope"), "none")

    def test_expire_and_ttl_pttl(self):
        self.r.set("e", "v")
        self.assertEqual(self.r.ttl("e"), -1)
        self.assertEqual(self.r.pttl("e"), -1)
        self.assertTrue(self.r.expire("e", 100))
        self.assertIn(self.r.ttl("e"), (99, 100))
        self.assertTrue(95000 <= self.r.pttl("e") <= 100000)
        self.assertEqual(self.r.ttl("nope"), -2)
        self.assertEqual(self.r.pttl("nope"), -2)
        self.assertFalse(self.r.expire("nope", 100))

    def test_pexpire_sets_millisecond_ttl(self):
        self.r.set("pe", "v")
        self.assertTrue(self.r.pexpire("pe", 50000))
        self.assertTrue(45000 <= self.r.pttl("pe") <= 50000)
        self.assertIn(self.r.ttl("pe"), (49, 50))

    def test_expireat_future_and_past(self):
        self.r.set("ea", "v")
        self.assertTrue(self.r.expireat("ea", int(time.time()) + 1000))
        self.assertTrue(990 <= self.r.ttl("ea") <= 1001)
        self.assertTrue(self.r.expireat("ea", int(time.time()) - 10))
        self.assertEqual(self.r.exists("ea"), 0)
        self.assertIsNone(self.r.get("ea"))

    def test_expire_with_negative_time_deletes_key(self):
        self.r.set("en", "v")
        self.assertEqual(self.raw().command("EXPIRE", "en", "-1"), 1)
        self.assertEqual(self.r.exists("en"), 0)

    def test_expire_nx_xx_gt_lt(self):
        c = self.raw()
        self.r.set("o", "v")
        self.assertEqual(c.command("EXPIRE", "o", "100", "XX"), 0)  # no TTL yet
        self.assertEqual(self.r.ttl("o"), -1)
        self.assertEqual(c.command("EXPIRE", "o", "100", "NX"), 1)
        self.assertEqual(c.command("EXPIRE", "o", "200", "NX"), 0)
        self.assertIn(self.r.ttl("o"), (99, 100))
        self.assertEqual(c.command("EXPIRE", "o", "200", "XX"), 1)
        self.assertIn(self.r.ttl("o"), (199, 200))
        self.assertEqual(c.command("EXPIRE", "o", "100", "GT"), 0)
        self.assertEqual(c.command("EXPIRE", "o", "300", "GT"), 1)
        self.assertIn(self.r.ttl("o"), (299, 300))
        self.assertEqual(c.command("EXPIRE", "o", "400", "LT"), 0)
        self.assertEqual(c.command("EXPIRE", "o", "50", "LT"), 1)
        self.assertIn(self.r.ttl("o"), (49, 50))
        # A key without TTL counts as an infinite TTL for GT / LT.
        self.r.set("p", "v")
        self.assertEqual(c.command("EXPIRE", "p", "100", "GT"), 0)
        self.assertEqual(self.r.ttl("p"), -1)
        self.assertEqual(c.command("EXPIRE", "p", "100", "LT"), 1)
        self.assertIn(self.r.ttl("p"), (99, 100))

    def test_expire_ttl_persist_work_on_hashes(self):
        self.r.hset("eh", "f", "v")
        self.assertTrue(self.r.expire("eh", 100))
        self.assertIn(self.r.ttl("eh"), (99, 100))
        self.assertEqual(self.r.hset("eh", "g", "w"), 1)
        self.assertIn(self.r.ttl("eh"), (99, 100), "HSET on an existing hash keeps its TTL")
        self.assertTrue(self.r.persist("eh"))
        self.assertEqual(self.r.ttl("eh"), -1)
        self.assertTrue(self.r.pexpire("eh", 50))
        wait_until(lambda: self.r.hgetall("eh") == {}, 3.0, what="the hash to expire")
        self.assertEqual(self.r.exists("eh"), 0)

    def test_expire_option_errors(self):
        self.r.set("oe", "v")
        self.assertEqual(self.err("EXPIRE", "oe", "10", "NX", "XX"),
                         "ERR NX and XX, GT or LT options at the same time are not compatible")
        self.assertEqual(self.err("EXPIRE", "oe", "10", "GT", "LT"),
                         "ERR GT and LT options at the same time are not compatible")
        self.assertEqual(self.err("EXPIRE", "oe", "10", "FOO"), "ERR Unsupported option FOO")
        self.assertEqual(self.err("EXPIRE", "oe", "abc"), ERR_NOT_INT)
        self.assertEqual(self.r.ttl("oe"), -1)

    def test_persist_removes_ttl(self):
        self.r.set("ps", "v", ex=100)
        self.assertTrue(self.r.persist("ps"))
        self.assertEqual(self.r.ttl("ps"), -1)
        self.assertFalse(self.r.persist("ps"))
        self.assertFalse(self.r.persist("nope"))
        self.assertEqual(self.r.get("ps"), "v")

    def test_scan_match_returns_only_matching_keys(self):
        self.r.mset({"user:%d" % i: i for i in range(60)})
        self.r.mset({"item:%d" % i: i for i in range(40)})
        got = self.scan_all(match="user:*", count=7)
        self.assertEqual(sorted(got), sorted("user:%d" % i for i in range(60)))
        self.assertEqual(sorted(self.scan_all(match="user:1?")), sorted("user:1%d" % i for i in range(10)))

    def test_scan_type_filters_by_type(self):
        self.r.mset({"s%d" % i: i for i in range(30)})
        for i in range(12):
            self.r.hset("h%d" % i, "f", "v")
        self.assertEqual(sorted(self.scan_all(_type="hash")), sorted("h%d" % i for i in range(12)))
        self.assertEqual(len(self.scan_all(_type="string")), 30)
        self.assertEqual(self.scan_all(_type="nosuchtype"), [])

    def test_scan_count_bounds_the_batch(self):
        self.mset_many({"c%d" % i: i for i in range(2000)})
        cursor, batch = self.r.scan(0, count=10)
        self.assertNotEqual(cursor, 0)
        self.assertLessEqual(len(batch), 40)
        cursor, batch = self.r.scan(0, count=5000)
        self.assertGreater(len(batch), 40)

    def test_scan_errors(self):
        self.assertEqual(self.err("SCAN", "abc"), "ERR invalid cursor")
        self.assertEqual(self.err("SCAN", "0", "COUNT", "0"), ERR_SYNTAX)
        self.assertEqual(self.err("SCAN", "0", "COUNT", "x"), ERR_NOT_INT)
        self.assertEqual(self.err("SCAN", "0", "FOO"), ERR_SYNTAX)

    def test_scan_full_iteration_returns_every_key_exactly_once(self):
        keys = {"scan:%d" % i: i for i in range(5000)}
        self.mset_many(keys)
        for count in (10, 100):
            with self.subTest(count=count):
                got = self.scan_all(count=count)
                self.assertEqual(len(got), len(set(got)), "SCAN returned duplicates")
                self.assertEqual(set(got), set(keys))

    def test_scan_returns_stable_keys_while_table_grows(self):
        stable = {"stable:%d" % i: i for i in range(2000)}
        self.mset_many(stable)
        stop = threading.Event()
        errors = []
        added = [0]

        def writer():
            w = self.server.redis()
            try:
                for batch in range(60):  # up to 30,000 new keys: several table doublings
                    if stop.is_set():
                        break
                    base = batch * 500
                    w.mset({"grow:%d" % (base + i): i for i in range(500)})
                    added[0] = base + 500
            except Exception as e:  # reported below
                errors.append(e)
            finally:
                w.close()

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        try:
            wait_until(lambda: added[0] > 0 or errors or not t.is_alive(), 10.0, what="the writer to start")
            added_at_start = added[0]
            got = set()
            cursor = 0
            for _ in range(200000):
                cursor, batch = self.r.scan(cursor, count=20)
                got.update(batch)
                if cursor == 0:
                    break
            else:
                self.fail("SCAN did not finish")
            added_during_scan = added[0] - added_at_start
        finally:
            stop.set()
            t.join(30)
        self.assertFalse(t.is_alive(), "writer thread did not stop")
        self.assertEqual(errors, [])
        self.assertGreater(added_during_scan, 0, "no key was added while the scan ran")
        missing = set(stable) - got
        self.assertEqual(missing, set(), "%d stable keys never returned" % len(missing))

    def test_keys_matches_glob_across_shards(self):
        self.r.mset({"key:%d" % i: i for i in range(30)})
        self.r.mset({"other:%d" % i: i for i in range(10)})
        self.assertEqual(sorted(self.r.keys("key:*")), sorted("key:%d" % i for i in range(30)))
        self.assertEqual(sorted(self.r.keys("key:2?")), sorted("key:2%d" % i for i in range(10)))
        self.assertEqual(sorted(self.r.keys("*:[1-2]")), ["key:1", "key:2", "other:1", "other:2"])
        self.assertEqual(len(self.r.keys("*")), 40)
        self.assertEqual(self.r.keys("nomatch*"), [])

    # =======================================================================
    # Strings

    def test_set_and_get(self):
        self.assertTrue(self.r.set("k", "v"))
        self.assertEqual(self.r.get("k"), "v")
        self.assertIsNone(self.r.get("missing"))
        self.assertTrue(self.r.set("k", "longer value"))
        self.assertEqual(self.r.get("k"), "longer value")

    def test_get_set_binary_value(self):
        r = self.server.redis(decode_responses=False)
        self.addCleanup(r.close)
        value = bytes(range(256)) * 3 + b"\r\n\x00"
        r.set(b"bin\x00key", value)
        self.assertEqual(r.get(b"bin\x00key"), value)

    def test_get_wrong_number_of_arguments(self):
        self.assertEqual(self.err("GET"), wrong_args("get"))
        self.assertEqual(self.err("GET", "a", "b"), wrong_args("get"))

    def test_get_on_hash_is_wrongtype(self):
        self.r.hset("hk", "f", "v")
        self.assertEqual(self.err("GET", "hk"), ERR_WRONGTYPE)

    def test_set_ex_and_px_set_ttl(self):
        self.r.set("ex", "v", ex=100)
        self.assertIn(self.r.ttl("ex"), (99, 100))
        self.r.set("px", "v", px=100000)
        self.assertTrue(95000 <= self.r.pttl("px") <= 100000)

    def test_set_without_keepttl_clears_ttl(self):
        self.r.set("kt", "v", ex=100)
        self.r.set("kt", "w")
        self.assertEqual(self.r.ttl("kt"), -1)

    def test_set_keepttl_keeps_ttl(self):
        self.r.set("kt", "v", ex=100)
        self.r.set("kt", "w", keepttl=True)
        self.assertIn(self.r.ttl("kt"), (99, 100))
        self.assertEqual(self.r.get("kt"), "w")

    def test_set_nx_and_xx(self):
        self.assertIsNone(self.r.set("nx", "1", xx=True))
        self.assertIsNone(self.r.get("nx"))
        self.assertTrue(self.r.set("nx", "1", nx=True))
        self.assertIsNone(self.r.set("nx", "2", nx=True))
        self.assertEqual(self.r.get("nx"), "1")
        self.assertTrue(self.r.set("nx", "3", xx=True))
        self.assertEqual(self.r.get("nx"), "3")

    def test_set_get_returns_previous_value(self):
        self.assertIsNone(self.r.set("sg", "1", get=True))
        self.assertEqual(self.r.set("sg", "2", get=True), "1")
        self.assertEqual(self.r.get("sg"), "2")
        self.r.hset("sgh", "f", "v")
        self.assertEqual(self.err("SET", "sgh", "x", "GET"), ERR_WRONGTYPE)
        self.assertEqual(self.r.type("sgh"), "hash")

    def test_set_overwrites_a_hash(self):
        self.r.hset("oh", "f", "v")
        self.assertTrue(self.r.set("oh", "s"))
        self.assertEqual(self.r.type("oh"), "string")

    def test_set_option_errors(self):
        cases = [
            (("SET", "k", "v", "NX", "XX"), ERR_SYNTAX),
            (("SET", "k", "v", "EX"), ERR_SYNTAX),
            (("SET", "k", "v", "EX", "10", "PX", "100"), ERR_SYNTAX),
            (("SET", "k", "v", "KEEPTTL", "EX", "10"), ERR_SYNTAX),
            (("SET", "k", "v", "FOO"), ERR_SYNTAX),
            (("SET", "k", "v", "EX", "abc"), ERR_NOT_INT),
            (("SET", "k", "v", "EX", "0"), "ERR invalid expire time in 'set' command"),
            (("SET", "k", "v", "PX", "-5"), "ERR invalid expire time in 'set' command"),
            (("SET", "k"), wrong_args("set")),
        ]
        for args, want in cases:
            with self.subTest(args=args):
                self.assertEqual(self.err(*args), want)
        self.assertEqual(self.r.exists("k"), 0, "a failed SET must not store anything")

    def test_mset_and_mget_across_shards(self):
        data = {"mk%d" % i: "val%d" % i for i in range(300)}
        self.assertTrue(self.r.mset(data))
        keys = list(data) + ["missing1"]
        self.assertEqual(self.r.mget(keys), [data[k] for k in data] + [None])

    def test_mget_of_a_hash_is_nil(self):
        self.r.hset("mh", "f", "v")
        self.r.set("ms", "s")
        self.assertEqual(self.r.mget("mh", "ms", "none"), [None, "s", None])

    def test_mset_odd_arguments_is_wrong_arity(self):
        self.assertEqual(self.err("MSET", "a"), wrong_args("mset"))
        self.assertEqual(self.err("MSET", "a", "b", "c"), wrong_args("mset"))
        self.assertEqual(self.r.exists("a"), 0)

    def test_mset_clears_ttl(self):
        self.r.set("mt", "v", ex=100)
        self.r.mset({"mt": "w"})
        self.assertEqual(self.r.ttl("mt"), -1)

    def test_incr_and_incrby(self):
        self.assertEqual(self.r.incr("n"), 1)
        self.assertEqual(self.r.incrby("n", 41), 42)
        self.assertEqual(self.r.incrby("n", -50), -8)
        self.assertEqual(self.r.get("n"), "-8")

    def test_incr_keeps_ttl(self):
        self.r.set("it", "5", ex=100)
        self.assertEqual(self.r.incr("it"), 6)
        self.assertIn(self.r.ttl("it"), (99, 100))

    def test_incr_errors(self):
        self.r.set("s", "abc")
        self.r.set("max", str(2 ** 63 - 1))
        self.r.hset("h", "f", "1")
        self.assertEqual(self.err("INCR", "s"), ERR_NOT_INT)
        self.assertEqual(self.err("INCRBY", "n", "x"), ERR_NOT_INT)
        self.assertEqual(self.err("INCRBY", "n", "1.5"), ERR_NOT_INT)
        self.assertEqual(self.err("INCR", "max"), "ERR increment or decrement would overflow")
        self.assertEqual(self.err("INCR", "h"), ERR_WRONGTYPE)
        self.assertEqual(self.r.get("max"), str(2 ** 63 - 1))

    def test_incrbyfloat_formats_like_redis(self):
        c = self.raw()
        cases = [("10.5", "0.1", "10.6"), ("5.0e3", "2.0e2", "5200"), ("3", "1.5", "4.5"),
                 ("0", "-0.25", "-0.25"), ("1.5", "-1.5", "0"), (None, "3.0", "3")]
        for i, (start, by, want) in enumerate(cases):
            with self.subTest(start=start, by=by):
                key = "f%d" % i
                if start is not None:
                    self.r.set(key, start)
                self.assertEqual(c.raw_command("INCRBYFLOAT", key, by), b"$%d\r\n%s\r\n" % (len(want), want.encode()))
                self.assertEqual(self.r.get(key), want)

    def test_incrbyfloat_errors(self):
        self.r.set("fs", "abc")
        self.assertEqual(self.err("INCRBYFLOAT", "fs", "1"), "ERR value is not a valid float")
        self.assertEqual(self.err("INCRBYFLOAT", "fn", "abc"), "ERR value is not a valid float")
        self.r.hset("fh", "f", "1")
        self.assertEqual(self.err("INCRBYFLOAT", "fh", "1"), ERR_WRONGTYPE)

    def test_large_value_round_trip(self):
        # 1 MiB: far below the default proto-max-bulk-len (512mb, docs/operations.md).
        value = "".join(random.Random(7).choice("abcdef0123456789") for _ in range(4096)) * 256
        self.assertTrue(self.r.set("big", value))
        self.assertEqual(self.r.get("big"), value)

    def test_command_split_across_reads_is_answered(self):
        # A request that arrives in two TCP segments must be buffered, not
        # refused: the default client-query-buffer-limit is 1gb (docs/operations.md).
        c = self.raw()
        cid = c.command("CLIENT", "ID")
        c.send(b"*2\r\n$4\r\nECHO\r\n$5\r\nhel")
        watcher = self.raw()

        def server_has_partial():
            line = watcher.command("CLIENT", "LIST", "ID", str(cid))
            return "gone" if line == "" else ("seen" if re.search(r"qbuf=[1-9]", line) else None)

        state = wait_until(server_has_partial, 5.0, what="the server to read the partial request")
        self.assertEqual(state, "seen", "the server closed a client that sent half a request")
        c.send(b"lo\r\n")
        self.assertEqual(c.read_reply(), "hello")

    # =======================================================================
    # Hashes

    def test_hset_and_hget(self):
        self.assertEqual(self.r.hset("h", "f1", "v1"), 1)
        self.assertEqual(self.r.hset("h", mapping={"f1": "x", "f2": "v2"}), 1)
        self.assertEqual(self.r.hget("h", "f1"), "x")
        self.assertEqual(self.r.hget("h", "f2"), "v2")
        self.assertIsNone(self.r.hget("h", "nofield"))
        self.assertIsNone(self.r.hget("nokey", "f"))

    def test_hset_odd_arguments_is_wrong_arity(self):
        self.assertEqual(self.err("HSET", "h", "a"), wrong_args("hset"))
        self.assertEqual(self.err("HSET", "h", "a", "b", "c"), wrong_args("hset"))
        self.assertEqual(self.r.exists("h"), 0)

    def test_hmget_returns_values_in_order(self):
        self.r.hset("h", mapping={"a": "1", "b": "2"})
        self.assertEqual(self.r.hmget("h", ["b", "x", "a"]), ["2", None, "1"])
        self.assertEqual(self.r.hmget("nokey", ["a", "b"]), [None, None])

    def test_hgetall_returns_every_field(self):
        fields = {"f%d" % i: "v%d" % i for i in range(50)}
        self.r.hset("h", mapping=fields)
        self.assertEqual(self.r.hgetall("h"), fields)
        self.assertEqual(self.r.hgetall("nokey"), {})

    def test_hdel_and_hlen(self):
        self.r.hset("h", mapping={"a": 1, "b": 2, "c": 3})
        self.assertEqual(self.r.hlen("h"), 3)
        self.assertEqual(self.r.hdel("h", "a", "x", "a"), 1)
        self.assertEqual(self.r.hlen("h"), 2)
        self.assertEqual(self.r.hdel("nokey", "a"), 0)
        self.assertEqual(self.r.hlen("nokey"), 0)

    def test_hdel_of_last_field_removes_the_key(self):
        self.r.hset("h", "only", "1")
        self.assertEqual(self.r.hdel("h", "only"), 1)
        self.assertEqual(self.r.exists("h"), 0)
        self.assertEqual(self.r.type("h"), "none")

    def test_hexists(self):
        self.r.hset("h", "a", "1")
        self.assertTrue(self.r.hexists("h", "a"))
        self.assertFalse(self.r.hexists("h", "b"))
        self.assertFalse(self.r.hexists("nokey", "a"))

    def test_hincrby(self):
        self.assertEqual(self.r.hincrby("h", "n", 5), 5)
        self.assertEqual(self.r.hincrby("h", "n", -7), -2)
        self.assertEqual(self.r.hget("h", "n"), "-2")
        self.r.hset("h", "s", "abc")
        self.assertEqual(self.err("HINCRBY", "h", "s", "1"), "ERR hash value is not an integer")
        self.assertEqual(self.err("HINCRBY", "h", "n", "x"), ERR_NOT_INT)
        self.r.hset("h", "max", str(2 ** 63 - 1))
        self.assertEqual(self.err("HINCRBY", "h", "max", "1"), "ERR increment or decrement would overflow")

    def test_hincrby_error_does_not_create_key(self):
        self.assertEqual(self.err("HINCRBY", "newh", "n", "x"), ERR_NOT_INT)
        self.assertEqual(self.r.exists("newh"), 0)

    def test_hash_commands_on_string_are_wrongtype(self):
        self.r.set("s", "v")
        for args in (("HSET", "s", "f", "v"), ("HGET", "s", "f"), ("HMGET", "s", "f"), ("HGETALL", "s"),
                     ("HDEL", "s", "f"), ("HLEN", "s"), ("HEXISTS", "s", "f"), ("HINCRBY", "s", "f", "1")):
            with self.subTest(cmd=args[0]):
                self.assertEqual(self.err(*args), ERR_WRONGTYPE)
        self.assertEqual(self.r.get("s"), "v")

    # =======================================================================
    # Error texts

    def test_unknown_command_error_text(self):
        self.assertEqual(self.err("foo", "a"), "ERR unknown command 'foo', with args beginning with: 'a' ")
        self.assertEqual(self.err("foo"), "ERR unknown command 'foo', with args beginning with: ")
        self.assertEqual(self.err("foo", "a", "b c"),
                         "ERR unknown command 'foo', with args beginning with: 'a' 'b c' ")

    def test_unknown_command_lists_at_most_128_bytes_of_arguments(self):
        # Redis 7 (server.c): for (i=1; i<argc && sdslen(args)<128; i++)
        #   args = sdscatprintf(args, "'%.*s' ", 128-sdslen(args), argv[i]);
        a, b = "a" * 100, "b" * 100
        self.assertEqual(self.err("foo", a, b, "c"),
                         "ERR unknown command 'foo', with args beginning with: '%s' '%s' " % (a, "b" * 25))

    def test_unknown_command_over_inline_protocol(self):
        c = self.raw()
        c.send(b"foo a\r\n")
        self.assertEqual(c.read_reply(), "ERR unknown command 'foo', with args beginning with: 'a' ")

    def test_redis_py_maps_errors(self):
        self.r.hset("h", "f", "v")
        with self.assertRaises(redis.ResponseError) as cm:
            self.r.get("h")
        self.assertEqual(str(cm.exception), ERR_WRONGTYPE)
        with self.assertRaises(redis.ResponseError) as cm:
            self.r.execute_command("NOSUCHCMD")
        self.assertTrue(str(cm.exception).startswith("unknown command 'NOSUCHCMD'"))

    # =======================================================================
    # TTL behaviour

    def test_set_px_200_key_disappears(self):
        self.r.set("short", "v", px=200)
        self.assertEqual(self.r.get("short"), "v")
        start = time.monotonic()
        wait_until(lambda: self.r.get("short") is None, 3.0, what="the key to expire")
        self.assertGreater(time.monotonic() - start, 0.1, "expired too early")
        self.assertEqual(self.r.exists("short"), 0)
        self.assertEqual(self.r.ttl("short"), -2)

    def test_expired_key_is_not_returned_by_scan_or_keys(self):
        self.r.set("gone", "v", px=50)
        self.r.set("kept", "v")
        wait_until(lambda: self.r.pttl("gone") == -2, 3.0, what="expiry")
        self.assertEqual(self.r.keys("*"), ["kept"])
        self.assertEqual(self.scan_all(), ["kept"])

    def test_active_expiry_reclaims_keys_without_reads(self):
        pipe = self.r.pipeline(transaction=False)
        for i in range(1000):
            pipe.set("act:%d" % i, "v", px=100)
        pipe.execute()
        self.r.set("act:persistent", "v")
        # Only DBSIZE is sent: no read touches the keys, so only the active
        # sweep can take them back.
        wait_until(lambda: self.r.dbsize() == 1, 5.0, what="DBSIZE to drop to 1")
        self.assertGreaterEqual(self.r.info("stats")["expired_keys"], 1000)
        self.assertEqual(self.r.info("keyspace")["db0"]["expires"], 0)

    # =======================================================================
    # AUTH

    def test_requirepass_refuses_commands_before_auth(self):
        with self.own_server(requirepass="secret") as srv:
            c = self.raw(srv)
            self.assertEqual(c.command("GET", "k"), ERR_NOAUTH)
            self.assertEqual(c.command("PING"), ERR_NOAUTH)
            self.assertEqual(c.command("nosuch"), "ERR unknown command 'nosuch', with args beginning with: ")
            self.assertEqual(c.command("GET"), wrong_args("get"))

    def test_requirepass_wrong_password_is_wrongpass(self):
        with self.own_server(requirepass="secret") as srv:
            c = self.raw(srv)
            self.assertEqual(c.command("AUTH", "bad"), ERR_WRONGPASS)
            self.assertEqual(c.command("AUTH", "default", "bad"), ERR_WRONGPASS)
            self.assertEqual(c.command("AUTH", "alice", "secret"), ERR_WRONGPASS)
            self.assertEqual(c.command("GET", "k"), ERR_NOAUTH)

    def test_requirepass_auth_then_commands_work(self):
        with self.own_server(requirepass="secret") as srv:
            c = self.raw(srv)
            self.assertEqual(c.command("AUTH", "secret"), "OK")
            self.assertEqual(c.command("SET", "k", "v"), "OK")
            self.assertEqual(c.command("GET", "k"), "v")
            d = self.raw(srv)
            self.assertEqual(d.command("AUTH", "default", "secret"), "OK")
            self.assertEqual(d.command("GET", "k"), "v")
            r = srv.redis(password="secret")
            self.assertEqual(r.get("k"), "v")
            r.close()
            with self.assertRaises(redis.AuthenticationError):
                srv.redis().get("k")

    def test_requirepass_hello_3_auth(self):
        with self.own_server(requirepass="secret") as srv:
            c = self.raw(srv)
            self.assertTrue(c.command("HELLO", "3").message.startswith("NOAUTH HELLO must be called"))
            self.assertEqual(c.command("HELLO", "3", "AUTH", "default", "bad"), ERR_WRONGPASS)
            raw = c.raw_command("HELLO", "3", "AUTH", "default", "secret")
            self.assertTrue(raw.startswith(b"%"), raw)
            self.assertEqual(decode_reply(raw)[0]["proto"], 3)
            self.assertEqual(c.raw_command("GET", "missing"), b"_\r\n")

    def test_reset_deauthenticates(self):
        with self.own_server(requirepass="secret") as srv:
            c = self.raw(srv)
            self.assertEqual(c.command("AUTH", "secret"), "OK")
            self.assertEqual(c.command("RESET"), "RESET")
            self.assertEqual(c.command("GET", "k"), ERR_NOAUTH)

    # =======================================================================
    # RESP3 and RESP2 wire forms

    def resp3(self):
        c = self.raw()
        self.assertEqual(c.command("HELLO", "3")["proto"], 3)
        return c

    def test_resp3_hgetall_is_a_map(self):
        self.r.hset("h", mapping={"a": "1", "b": "2"})
        raw = self.resp3().raw_command("HGETALL", "h")
        self.assertTrue(raw.startswith(b"%2\r\n"), raw)
        value = decode_reply(raw)[0]
        self.assertIsInstance(value, RespMap)
        self.assertEqual(dict(value), {"a": "1", "b": "2"})
        self.assertEqual(self.resp3().raw_command("HGETALL", "nokey"), b"%0\r\n")

    def test_resp2_hgetall_is_a_flat_array(self):
        self.r.hset("h", mapping={"a": "1", "b": "2"})
        raw = self.raw().raw_command("HGETALL", "h")
        self.assertTrue(raw.startswith(b"*4\r\n"), raw)
        self.assertEqual(pairs_to_dict(decode_reply(raw)[0]), {"a": "1", "b": "2"})
        self.assertEqual(self.raw().raw_command("HGETALL", "nokey"), b"*0\r\n")

    def test_resp3_null_for_missing_values(self):
        c = self.resp3()
        self.assertEqual(c.raw_command("GET", "missing"), b"_\r\n")
        self.assertEqual(c.raw_command("HGET", "missing", "f"), b"_\r\n")
        self.assertEqual(c.raw_command("MGET", "missing"), b"*1\r\n_\r\n")

    def test_resp2_null_for_missing_values(self):
        c = self.raw()
        self.assertEqual(c.raw_command("GET", "missing"), b"$-1\r\n")
        self.assertEqual(c.raw_command("HGET", "missing", "f"), b"$-1\r\n")
        self.assertEqual(c.raw_command("MGET", "missing"), b"*1\r\n$-1\r\n")

    def test_resp3_incrbyfloat_is_a_bulk_string(self):
        self.r.set("f", "10.5")
        self.assertEqual(self.resp3().raw_command("INCRBYFLOAT", "f", "0.1"), b"$4\r\n10.6\r\n")

    def test_resp2_incrbyfloat_is_a_bulk_string(self):
        self.r.set("f", "10.5")
        self.assertEqual(self.raw().raw_command("INCRBYFLOAT", "f", "0.1"), b"$4\r\n10.6\r\n")

    def test_resp3_config_get_is_a_map(self):
        raw = self.resp3().raw_command("CONFIG", "GET", "maxclients")
        self.assertEqual(raw, b"%1\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n")

    def test_resp2_config_get_is_a_flat_array(self):
        raw = self.raw().raw_command("CONFIG", "GET", "maxclients")
        self.assertEqual(raw, b"*2\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n")

    def test_resp3_info_is_a_verbatim_string(self):
        value = self.resp3().command("INFO", "server")
        self.assertIsInstance(value, Verbatim)
        self.assertEqual(value.format, "txt")
        self.assertIn("# Server", value)

    # =======================================================================
    # redis-cli and inline commands

    def redis_cli(self, *args):
        exe = shutil.which("redis-cli")
        if exe is None:
            self.skipTest("redis-cli not installed")
        p = subprocess.run([exe, "-h", "127.0.0.1", "-p", str(self.port)] + list(args),
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.decode()

    def test_redis_cli_ping(self):
        self.assertEqual(self.redis_cli("PING"), "PONG\n")

    def test_redis_cli_set_get(self):
        self.assertEqual(self.redis_cli("SET", "cli", "hello world"), "OK\n")
        self.assertEqual(self.redis_cli("GET", "cli"), "hello world\n")
        self.assertEqual(self.r.get("cli"), "hello world")

    def test_redis_cli_resp3_hgetall(self):
        self.r.hset("clih", mapping={"f1": "v1", "f2": "v2"})
        out = self.redis_cli("-3", "HGETALL", "clih")
        self.assertEqual(sorted(out.splitlines()), ["f1 v1", "f2 v2"])

    def test_redis_cli_error_output(self):
        out = self.redis_cli("GET")
        self.assertIn("wrong number of arguments for 'get' command", out)

    def test_inline_ping(self):
        c = self.raw()
        c.send(b"PING\r\n")
        self.assertEqual(c.read_raw_reply(), b"+PONG\r\n")
        c.send(b"PING\n")  # bare LF, as telnet may send
        self.assertEqual(c.read_raw_reply(), b"+PONG\r\n")

    def test_inline_set_with_quotes(self):
        c = self.raw()
        c.send(b'SET k "a b"\r\n')
        self.assertEqual(c.read_raw_reply(), b"+OK\r\n")
        self.assertEqual(self.r.get("k"), "a b")
        c.send(b"SET k2 'x y' \r\nGET k2\r\n")
        self.assertEqual(c.read_replies(2), ["OK", "x y"])
        c.send(b'SET k3 "tab\\there\\x41"\r\n')
        self.assertEqual(c.read_reply(), "OK")
        self.assertEqual(self.r.get("k3"), "tab\there" + "A")

    def test_inline_unbalanced_quotes_is_protocol_error(self):
        c = self.raw()
        c.send(b'SET k "abc\r\n')
        self.assertEqual(c.read_reply(), "ERR Protocol error: unbalanced quotes in request")
        self.assertTrue(c.is_closed(5.0))
        self.assertServerAnswersPing()

    def test_empty_lines_and_empty_multibulk_are_ignored(self):
        c = self.raw()
        c.send(b"\r\n\r\n*0\r\nPING\r\n")
        self.assertEqual(c.read_raw_reply(), b"+PONG\r\n")

    # =======================================================================
    # Pipelining and concurrency

    def test_redis_py_pipeline_of_10000_commands(self):
        pipe = self.r.pipeline(transaction=False)
        for i in range(5000):
            pipe.set("pl:%d" % i, "v%d" % i)
            pipe.get("pl:%d" % i)
        replies = pipe.execute()
        self.assertEqual(len(replies), 10000)
        for i in range(5000):
            self.assertIs(replies[2 * i], True)
            self.assertEqual(replies[2 * i + 1], "v%d" % i)
        self.assertEqual(self.r.dbsize(), 5000)

    def test_raw_pipeline_of_10000_commands_in_one_write(self):
        parts = []
        for i in range(5000):
            parts.append(encode_command("SET", "rp:%d" % i, "value-%d" % i))
            parts.append(encode_command("INCR", "rp:counter"))
        c = self.raw(timeout=30)
        c.send(b"".join(parts))
        replies = c.read_replies(10000, timeout=30)
        for i in range(5000):
            self.assertEqual(replies[2 * i], "OK")
            self.assertEqual(replies[2 * i + 1], i + 1)
        self.assertEqual(self.r.get("rp:4999"), "value-4999")

    def test_pipeline_with_replies_over_1_mib_in_one_write(self):
        # The server flushes mid-pipeline past 1 MiB of replies; the client
        # reads nothing until everything is sent, so writes must also wait
        # for a full socket buffer to drain.
        values = {"big:%d" % i: ("%05d" % i) * 3277 for i in range(40)}  # ~16 KiB each
        self.r.mset(values)
        keys = list(values) * 10
        c = self.raw(timeout=30)
        c.send(b"".join(encode_command("GET", k) for k in keys))
        replies = c.read_replies(len(keys), timeout=30)
        self.assertEqual(replies, [values[k] for k in keys])
        self.assertEqual(c.command("PING"), "PONG")

    def test_pipelined_fan_out_commands_keep_order(self):
        c = self.raw()
        batch = []
        for i in range(200):
            batch.append(encode_command("MSET", "fo:a%d" % i, i, "fo:b%d" % i, -i))
            batch.append(encode_command("MGET", "fo:a%d" % i, "fo:b%d" % i, "fo:none"))
            batch.append(encode_command("EXISTS", "fo:a%d" % i, "fo:b%d" % i, "fo:none"))
        c.send(b"".join(batch))
        replies = c.read_replies(600, timeout=20)
        for i in range(200):
            self.assertEqual(replies[3 * i:3 * i + 3], ["OK", [str(i), str(-i), None], 2])

    def test_200_concurrent_clients(self):
        errors = []
        barrier = threading.Barrier(200, timeout=30)

        def worker(n):
            r = self.server.redis(socket_timeout=30)
            try:
                r.ping()
                barrier.wait()
                for j in range(50):
                    key, val = "cc:%d:%d" % (n, j), "%d-%d-%s" % (n, j, "x" * (j % 7))
                    if not r.set(key, val):
                        errors.append("SET %s failed" % key)
                    got = r.get(key)
                    if got != val:
                        errors.append("GET %s = %r, want %r" % (key, got, val))
            except Exception as e:
                errors.append("client %d: %r" % (n, e))
            finally:
                r.close()

        threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(200)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        for t in threads:
            t.join(max(0.1, deadline - time.monotonic()))
        self.assertFalse(any(t.is_alive() for t in threads), "clients still running after 60 s")
        self.assertEqual(errors[:10], [])
        self.assertEqual(self.r.dbsize(), 200 * 50)

    # =======================================================================
    # Bad input

    def test_oversized_bulk_length_is_refused_and_closed(self):
        c = self.raw()
        c.send(b"*1\r\n$999999999999\r\n")
        self.assertEqual(c.read_until_closed(), b"-ERR Protocol error: invalid bulk length\r\n")
        self.assertServerAnswersPing()

    def test_negative_bulk_length_is_refused(self):
        c = self.raw()
        c.send(b"*1\r\n$-5\r\n")
        self.assertEqual(c.read_until_closed(), b"-ERR Protocol error: invalid bulk length\r\n")
        self.assertServerAnswersPing()

    def test_huge_argument_count_is_refused(self):
        c = self.raw()
        c.send(b"*99999999\r\n")
        self.assertEqual(c.read_until_closed(), b"-ERR Protocol error: invalid multibulk length\r\n")
        self.assertServerAnswersPing()

    def test_non_numeric_argument_count_is_refused(self):
        c = self.raw()
        c.send(b"*abc\r\n")
        self.assertEqual(c.read_until_closed(), b"-ERR Protocol error: invalid multibulk length\r\n")
        self.assertServerAnswersPing()

    def test_bulk_without_dollar_is_refused(self):
        c = self.raw()
        c.send(b"*1\r\nXYZ\r\n")
        self.assertEqual(c.read_until_closed(), b"-ERR Protocol error: expected '$', got 'X'\r\n")
        self.assertServerAnswersPing()

    def test_replies_before_a_protocol_error_are_sent(self):
        c = self.raw()
        c.send(encode_command("SET", "pe", "1") + encode_command("GET", "pe") + b"*1\r\nX\r\n")
        self.assertEqual(c.read_until_closed(), b"+OK\r\n$1\r\n1\r\n-ERR Protocol error: expected '$', got 'X'\r\n")
        self.assertServerAnswersPing()

    def test_too_big_inline_request_is_refused(self):
        c = self.raw()
        try:
            c.send(b"A" * (64 * 1024 + 100))
        except OSError:
            pass  # closed while we were still writing: the reply is still readable
        self.assertEqual(c.read_until_closed(), b"-ERR Protocol error: too big inline request\r\n")
        self.assertServerAnswersPing()

    def test_random_garbage_does_not_kill_the_server(self):
        rng = random.Random(20240611)
        prefixes = [b"", b"*", b"$", b"*2\r\n", b"*3\r\n$3\r\nSET\r\n", b"+", b"\r\n", b"*1\r\n$"]
        for i in range(100):
            blob = rng.choice(prefixes) + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000)))
            try:
                with RawClient(self.port, timeout=2.0) as c:
                    c.send(blob)
                    # Take whatever comes back promptly; then hang up.
                    try:
                        c.read_until_closed(0.02)
                    except socket.timeout:
                        pass
            except OSError:
                pass  # the server may close mid-write; that is fine
            if i % 10 == 9:
                self.assertServerAnswersPing()
        self.assertServerAnswersPing()
        self.assertEqual(self.r.ping(), True)

    def test_half_sent_command_does_not_block_other_clients(self):
        stuck = self.raw()
        stuck.send(b"*3\r\n$3\r\nSET\r\n$1\r\n")
        for _ in range(20):
            self.assertServerAnswersPing()
        self.assertTrue(self.r.set("other", "ok"))
        self.assertEqual(self.r.get("other"), "ok")
        # The stuck client can still finish its command.
        stuck.send(b"k\r\n$1\r\nv\r\n")
        self.assertEqual(stuck.read_reply(), "OK")
        self.assertServerAnswersPing()

    def test_maxclients_refuses_the_extra_connection(self):
        with self.own_server(maxclients=5) as srv:
            first = [self.raw(srv) for _ in range(5)]
            for c in first:
                self.assertEqual(c.command("PING"), "PONG")
            extra = self.raw(srv)
            self.assertEqual(extra.read_until_closed(), b"-ERR max number of clients reached\r\n")
            for i, c in enumerate(first):
                self.assertEqual(c.command("SET", "mc%d" % i, i), "OK")
                self.assertEqual(c.command("GET", "mc%d" % i), str(i))
            # Once one leaves, a new one gets in.
            first[0].close()

            def try_connect():
                c = RawClient(srv.port)
                try:
                    if c.command("PING") == "PONG":
                        return c
                except (OSError, ConnectionError):
                    pass
                c.close()
                return None

            late = wait_until(try_connect, 5.0, what="a free client slot")
            self.addCleanup(late.close)
            self.assertRegex(late.command("INFO", "stats"), r"(?m)^rejected_connections:[1-9]")

    def test_client_query_buffer_limit_closes_the_client(self):
        with self.own_server(client_query_buffer_limit="1mb") as srv:
            c = self.raw(srv)
            c.send(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$2097152\r\n")
            chunk = b"x" * 65536
            try:
                for _ in range(28):  # 1.75 MiB of the 2 MiB argument: never complete
                    c.send(chunk)
            except OSError:
                pass  # closed while we were writing
            self.assertTrue(c.is_closed(5.0), "client over client-query-buffer-limit was not closed")
            self.assertServerAnswersPing(srv)
            self.assertEqual(srv.redis().exists("big"), 0)

    def test_client_query_buffer_limit_applies_to_a_complete_command(self):
        # Redis checks the limit after each read, before running anything, so
        # a 2 MiB argument never executes with a 1mb limit even when it
        # arrives whole.
        with self.own_server(client_query_buffer_limit="1mb") as srv:
            for attempt in range(2):
                c = self.raw(srv)
                try:
                    c.send(encode_command("SET", "big", "x" * (2 * 1024 * 1024)))
                except OSError:
                    pass
                self.assertTrue(c.is_closed(3.0), "client over client-query-buffer-limit was not closed")
                self.assertEqual(srv.redis().exists("big"), 0, "attempt %d: the over-limit SET ran" % attempt)
            self.assertServerAnswersPing(srv)


class SingleShardCompatTest(CompatTests, unittest.TestCase):
    SHARDS = 1


class ShardedCompatTest(CompatTests, unittest.TestCase):
    SHARDS = 4


def main():
    global SERVER_BINARY
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        SERVER_BINARY = sys.argv.pop(1)
    SERVER_BINARY = os.path.abspath(SERVER_BINARY)
    if not os.access(SERVER_BINARY, os.X_OK):
        sys.stderr.write("featurekv-server not found at %s (pass it as argv[1] or $FKV_SERVER)\n" % SERVER_BINARY)
        sys.exit(2)
    unittest.main()


if __name__ == "__main__":
    main()
