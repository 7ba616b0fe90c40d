#!/usr/bin/python3
"""ACL users through real clients: featurekv beside redis-server 7.

Run:  /usr/bin/python3 test_acl.py SERVER_BINARY [unittest args]

Users from the conf file and from an aclfile, every rule kind, the
read-only model user of docs/operations.md ("Securing featurekv"), key
patterns on feature commands (FGET, FMGET, FEVENT's planned keys), the ACL
LOG, ACL SAVE + restart, connections of deleted or disabled users closed,
bad rules that change nothing, and the replies of Redis commands compared
with redis-server's, error texts included.
"""

import hashlib
import json
import os
import signal
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fkv_testlib import RawClient, RedisServer, RespError, ServerError, ServerProcess, wait_until  # noqa: E402

SERVER_BINARY = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 and not sys.argv[1].startswith("-")
                                else os.path.join(HERE, "..", "..", "build", "server", "featurekv-server"))
REGISTRY = os.path.normpath(os.path.join(HERE, "..", "..", "conf", "features.yaml"))
NOPERM_CMD = "NOPERM this user has no permissions to run the '%s' command"
NOPERM_KEY = "NOPERM this user has no permissions to access one of the keys used as arguments"
WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."


def event(user, product, action="click"):
    return json.dumps({"user_id": user, "product_id": product, "action": action, "timestamp": int(time.time())})


def login(port, user, password):
    c = RawClient(port, timeout=10)
    reply = c.command("AUTH", user, password)
    if reply != "OK":
        c.close()
        raise AssertionError("AUTH %s: %r" % (user, reply))
    return c


def as_dict(flat):
    """A RESP2 flat map reply as a dict."""
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


class AclTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fkv-acl-")
        cls.conf = os.path.join(cls.tmp, "featurekv.conf")
        with open(cls.conf, "w") as f:
            f.write("user model on >model-pw ~user:* ~product:* resetchannels -@all +@read +@connection\n")
            f.write("user ingest on #%s ~* +fevent +fset +ping\n" % hashlib.sha256(b"ingest-pw").hexdigest())
            f.write("user admin on >admin-pw allkeys allcommands\n")
            f.write("user users-only on >u-pw ~user:* +@all\n")
        cls.fkv = ServerProcess(SERVER_BINARY, shards=2, conf=cls.conf,
                                directives=[("registry", REGISTRY), ("save", "")]).start()

    @classmethod
    def tearDownClass(cls):
        cls.fkv.stop()

    def setUp(self):
        self.admin = RawClient(self.fkv.port, timeout=10)
        self.addCleanup(self.admin.close)

    def tearDown(self):
        self.assertTrue(self.fkv.alive(), "featurekv died:\n" + self.fkv.diagnostics())

    def test_users_from_the_conf_file(self):
        users = self.admin.command("ACL", "USERS")
        self.assertEqual(users, ["admin", "default", "ingest", "model", "users-only"])
        lines = self.admin.command("ACL", "LIST")
        self.assertIn("user ingest on #%s ~* resetchannels -@all +fevent +fset +ping"
                      % hashlib.sha256(b"ingest-pw").hexdigest(), lines)
        # Passwords are kept as SHA-256 only: never the text.
        self.assertFalse(any("model-pw" in l or "admin-pw" in l for l in lines), lines)
        with login(self.fkv.port, "ingest", "ingest-pw") as c:
            self.assertEqual(c.command("ACL", "WHOAMI"), RespError(NOPERM_CMD % "acl|whoami"))
            self.assertEqual(c.command("PING"), "PONG")
        # Protected mode is on by default; loopback clients (all of these) are served.
        self.assertEqual(self.admin.command("CONFIG", "GET", "protected-mode"), ["protected-mode", "yes"])

    def test_read_only_model_user(self):
        with login(self.fkv.port, "ingest", "ingest-pw") as ing:
            self.assertEqual(ing.command("FEVENT", "user_events", event(7, 70), event(8, 80, "purchase")), 2)
            self.assertEqual(ing.command("FSET", "user:7", "last_action", "view"), "OK")
        with login(self.fkv.port, "model", "model-pw") as m:
            self.assertEqual(m.command("ACL", "WHOAMI"), RespError(NOPERM_CMD % "acl|whoami"))
            self.assertEqual(m.command("FGET", "user:7", "last_action"), ["view"])
            got = m.command("FMGET", "user:7", "user:8", "FEATURES", "clicks_1h")
            self.assertEqual(got, [[1], [0]])
            self.assertEqual(m.command("FWINDOW", "user:7", "clicks", "1h"), 1)
            self.assertEqual(m.command("PING"), "PONG")  # @connection
            for cmd, args in [("fevent", ("user_events", event(1, 2))), ("fset", ("user:7", "last_action", "x")),
                              ("fregistry", ("RELOAD",)), ("set", ("user:1", "x")), ("flushall", ()),
                              ("config", ("SET", "maxclients", "10")), ("shutdown", ())]:
                want = NOPERM_CMD % (cmd + "|set" if cmd == "config" else cmd)
                self.assertEqual(m.command(cmd.upper(), *args), RespError(want), cmd)
            self.assertEqual(self.admin.command("FGET", "user:7", "last_action"), ["view"])  # nothing changed
        log = self.admin.command("ACL", "LOG", "20")
        objects = {as_dict(e)["object"] for e in log if as_dict(e)["username"] == "model"}
        self.assertTrue({"fevent", "fset", "set", "flushall", "config|set"} <= objects, objects)

    def test_key_patterns_apply_to_feature_commands(self):
        with login(self.fkv.port, "users-only", "u-pw") as u:
            self.assertEqual(u.command("FGET", "user:1", "clicks_1h"), [None])
            self.assertEqual(u.command("FGET", "product:7", "views_1h"), RespError(NOPERM_KEY))
            self.assertEqual(u.command("FMGET", "user:1", "product:7", "FEATURES", "clicks_1h"), RespError(NOPERM_KEY))
            # A first key spelled FEATURES is a key: checked against ~user:*
            # (the keys end at the next FEATURES), not skipped.
            self.assertEqual(u.command("FMGET", "FEATURES", "product:7", "FEATURES", "clicks_1h"), RespError(NOPERM_KEY))
            self.assertEqual(u.command("FMGET", "user:1", "FEATURES", "product:7", "clicks_1h"),
                             RespError("ERR unknown feature 'product:7' for entity 'user'"))
            self.assertEqual(u.command("SET", "user:x", "1"), "OK")
            self.assertEqual(u.command("MSET", "user:y", "1", "other", "2"), RespError(NOPERM_KEY))
            self.assertEqual(u.command("RENAME", "user:x", "other"), RespError(NOPERM_KEY))
            # An event writes the user's and the product's entities: the
            # product key is outside ~user:*, so nothing is applied.
            self.assertEqual(u.command("FEVENT", "user_events", event(501, 601, "view")), RespError(NOPERM_KEY))
            self.assertEqual(self.admin.command("EXISTS", "user:501", "product:601"), 0)
        entry = as_dict(self.admin.command("ACL", "LOG", "1")[0])
        self.assertEqual((entry["reason"], entry["object"], entry["username"], entry["context"]),
                         ("key", "product:601", "users-only", "toplevel"))

    def test_acl_log_shape_and_grouping(self):
        self.assertEqual(self.admin.command("ACL", "LOG", "RESET"), "OK")
        with RawClient(self.fkv.port) as c:
            for _ in range(3):
                self.assertEqual(c.command("AUTH", "model", "wrong"), RespError(WRONGPASS))
            self.assertEqual(c.command("AUTH", "nosuch", "x"), RespError(WRONGPASS))
        log = self.admin.command("ACL", "LOG")
        self.assertEqual(len(log), 2)
        newest, grouped = as_dict(log[0]), as_dict(log[1])
        self.assertEqual(list(grouped.keys()),
                         ["count", "reason", "context", "object", "username", "age-seconds", "client-info"])
        self.assertEqual((grouped["count"], grouped["reason"], grouped["object"], grouped["username"]),
                         (3, "auth", "AUTH", "model"))
        self.assertEqual(newest["username"], "nosuch")
        self.assertIn("cmd=auth", grouped["client-info"])
        self.assertLess(float(grouped["age-seconds"]), 60)
        self.assertEqual(len(self.admin.command("ACL", "LOG", "1")), 1)
        self.assertEqual(self.admin.command("ACL", "LOG", "RESET"), "OK")
        self.assertEqual(self.admin.command("ACL", "LOG"), [])

    def test_every_rule_kind(self):
        a = self.admin
        self.addCleanup(a.command, "ACL", "DELUSER", "r")
        sha = hashlib.sha256(b"p2").hexdigest()
        self.assertEqual(a.command("ACL", "SETUSER", "r", "on", ">p1", "#" + sha, "~a:*", "&chan", "+get", "+@hash",
                                   "-hdel"), "OK")
        u = as_dict(a.command("ACL", "GETUSER", "r"))
        self.assertEqual(u["flags"], ["on"])
        self.assertEqual(u["passwords"], [hashlib.sha256(b"p1").hexdigest(), sha])
        self.assertEqual((u["keys"], u["channels"]), ("~a:*", "&chan"))
        self.assertEqual(u["commands"], "-@all +@hash +get -hdel")
        with login(self.fkv.port, "r", "p1") as c:
            self.assertEqual(c.command("GET", "a:1"), None)
            self.assertEqual(c.command("HSET", "a:h", "f", "1"), 1)
            self.assertEqual(c.command("HDEL", "a:h", "f"), RespError(NOPERM_CMD % "hdel"))
            self.assertEqual(c.command("GET", "b:1"), RespError(NOPERM_KEY))
            self.assertEqual(c.command("AUTH", "r", "p2"), "OK")
        # <pass and !hash remove; resetpass and nopass.
        self.assertEqual(a.command("ACL", "SETUSER", "r", "<p1", "!" + sha), "OK")
        self.assertEqual(as_dict(a.command("ACL", "GETUSER", "r"))["passwords"], [])
        with RawClient(self.fkv.port) as c:
            self.assertEqual(c.command("AUTH", "r", "p1"), RespError(WRONGPASS))
        self.assertEqual(a.command("ACL", "SETUSER", "r", "nopass"), "OK")
        with login(self.fkv.port, "r", "anything") as c:
            self.assertEqual(c.command("GET", "a:1"), None)
        self.assertEqual(a.command("ACL", "SETUSER", "r", "resetpass"), "OK")
        with RawClient(self.fkv.port) as c:
            self.assertEqual(c.command("AUTH", "r", "anything"), RespError(WRONGPASS))
        # allkeys / resetkeys, allcommands / nocommands, -@category, off, reset.
        self.assertEqual(a.command("ACL", "SETUSER", "r", ">p", "allkeys", "allcommands", "-@dangerous"), "OK")
        with login(self.fkv.port, "r", "p") as c:
            self.assertEqual(c.command("SET", "b:1", "x"), "OK")
            self.assertEqual(c.command("FLUSHALL"), RespError(NOPERM_CMD % "flushall"))
            self.assertEqual(c.command("KEYS", "zz*"), RespError(NOPERM_CMD % "keys"))
        self.assertEqual(a.command("ACL", "SETUSER", "r", "resetkeys", "~c:*", "nocommands", "+get"), "OK")
        self.assertEqual(as_dict(a.command("ACL", "GETUSER", "r"))["commands"], "-@all +get")
        with login(self.fkv.port, "r", "p") as c:
            self.assertEqual(c.command("GET", "b:1"), RespError(NOPERM_KEY))
            self.assertEqual(c.command("SET", "c:1", "x"), RespError(NOPERM_CMD % "set"))
        self.assertEqual(a.command("ACL", "SETUSER", "r", "off"), "OK")
        with RawClient(self.fkv.port) as c:
            self.assertEqual(c.command("AUTH", "r", "p"), RespError(WRONGPASS))
        self.assertEqual(a.command("ACL", "SETUSER", "r", "reset"), "OK")
        self.assertEqual([l for l in a.command("ACL", "LIST") if l.startswith("user r ")],
                         ["user r off sanitize-payload resetchannels -@all"])

    def test_bad_rules_change_nothing(self):
        a = self.admin
        self.addCleanup(a.command, "ACL", "DELUSER", "b")
        self.assertEqual(a.command("ACL", "SETUSER", "b", "on", ">pw", "~k:*", "+get"), "OK")
        before = as_dict(a.command("ACL", "GETUSER", "b"))
        for rule, why in [("+nosuch", "Unknown command or category name in ACL"),
                          ("+@nosuch", "Unknown command or category name in ACL"),
                          ("bogus", "Syntax error"),
                          ("<notapw", "The password you are trying to remove from the user does not exist"),
                          ("#ABC", "The password hash must be exactly 64 characters and contain only lowercase "
                                   "hexadecimal characters")]:
            got = a.command("ACL", "SETUSER", "b", "off", "+set", rule)
            self.assertEqual(got, RespError("ERR Error in ACL SETUSER modifier '%s': %s" % (rule, why)))
            self.assertEqual(as_dict(a.command("ACL", "GETUSER", "b")), before)
        self.assertEqual(a.command("ACL", "SETUSER", "new", "on", "bogus"), RespError(
            "ERR Error in ACL SETUSER modifier 'bogus': Syntax error"))
        self.assertIsNone(a.command("ACL", "GETUSER", "new"))
        self.assertEqual(a.command("ACL", "DELUSER", "default"), RespError("ERR The 'default' user cannot be removed"))

    def test_deleted_or_disabled_users_lose_their_connections(self):
        a = self.admin
        for name in ("gone", "disabled"):
            self.assertEqual(a.command("ACL", "SETUSER", name, "on", ">pw", "allkeys", "+@all"), "OK")
        gone = login(self.fkv.port, "gone", "pw")
        disabled = login(self.fkv.port, "disabled", "pw")
        self.addCleanup(gone.close)
        self.addCleanup(disabled.close)
        other = login(self.fkv.port, "admin", "admin-pw")
        self.addCleanup(other.close)
        self.assertIn("user=gone", a.command("CLIENT", "LIST"))
        self.assertEqual(a.command("ACL", "DELUSER", "gone"), 1)
        self.assertEqual(a.command("ACL", "SETUSER", "disabled", "off"), "OK")
        self.addCleanup(a.command, "ACL", "DELUSER", "disabled")
        # Closed by the server although they sent nothing.
        self.assertEqual(gone.read_until_closed(timeout=5), b"")
        self.assertEqual(disabled.read_until_closed(timeout=5), b"")
        self.assertEqual(other.command("PING"), "PONG")
        self.assertNotIn("user=gone", a.command("CLIENT", "LIST"))

    def test_a_permission_change_reaches_open_connections(self):
        a = self.admin
        self.addCleanup(a.command, "ACL", "DELUSER", "live")
        self.assertEqual(a.command("ACL", "SETUSER", "live", "on", ">pw", "allkeys", "+get"), "OK")
        with login(self.fkv.port, "live", "pw") as c:
            self.assertEqual(c.command("SET", "k", "v"), RespError(NOPERM_CMD % "set"))
            self.assertEqual(a.command("ACL", "SETUSER", "live", "+set"), "OK")
            self.assertEqual(c.command("SET", "k", "v"), "OK")
            self.assertEqual(a.command("ACL", "SETUSER", "live", "-get"), "OK")
            self.assertEqual(c.command("GET", "k"), RespError(NOPERM_CMD % "get"))

    def test_queued_command_refused_aborts_exec(self):
        with login(self.fkv.port, "model", "model-pw") as m:
            self.assertEqual(m.command("MULTI"), RespError(NOPERM_CMD % "multi"))
        self.addCleanup(self.admin.command, "ACL", "DELUSER", "tx")
        self.assertEqual(self.admin.command("ACL", "SETUSER", "tx", "on", ">pw", "allkeys", "+@transaction", "+get"),
                         "OK")
        with login(self.fkv.port, "tx", "pw") as c:
            self.assertEqual(c.command("MULTI"), "OK")
            self.assertEqual(c.command("GET", "k"), "QUEUED")
            self.assertEqual(c.command("SET", "k", "v"), RespError(NOPERM_CMD % "set"))
            self.assertEqual(c.command("EXEC"), RespError("EXECABORT Transaction discarded because of previous errors."))

    def test_redis_py_with_a_user(self):
        r = self.fkv.redis(username="model", password="model-pw")
        self.assertEqual(r.execute_command("FGET", "user:404", "clicks_1h"), [None])
        import redis
        with self.assertRaises(redis.exceptions.NoPermissionError):
            r.set("user:1", "x")
        bad = self.fkv.redis(username="model", password="nope")
        with self.assertRaises(redis.exceptions.ResponseError) as e:  # redis-py 4.3 has no WRONGPASS class
            bad.ping()
        self.assertEqual(str(e.exception), WRONGPASS)


class AclFileTests(unittest.TestCase):
    def test_aclfile_save_and_restart(self):
        tmp = tempfile.mkdtemp(prefix="fkv-aclfile-")
        path = os.path.join(tmp, "users.acl")
        with open(path, "w") as f:
            f.write("user default on nopass ~* &* +@all\nuser alice on >a-pw ~a:* +get\n")
        fkv = ServerProcess(SERVER_BINARY, directives=[("aclfile", path), ("save", "")]).start()
        try:
            with RawClient(fkv.port) as c:
                self.assertEqual(c.command("ACL", "USERS"), ["alice", "default"])
                self.assertEqual(c.command("ACL", "SETUSER", "bob", "on", ">b-pw", "~b:*", "+@read"), "OK")
                self.assertEqual(c.command("ACL", "SAVE"), "OK")
            with open(path) as f:
                text = f.read()
            self.assertIn("user bob on #%s ~b:* resetchannels -@all +@read" % hashlib.sha256(b"b-pw").hexdigest(),
                          text)
            self.assertNotIn("b-pw", text)
            fkv.stop()
            fkv.start()
            with login(fkv.port, "bob", "b-pw") as c:
                self.assertEqual(c.command("GET", "b:1"), None)
                self.assertEqual(c.command("SET", "b:1", "x"), RespError(NOPERM_CMD % "set"))
            # ACL LOAD replaces the users with the file's, all or nothing.
            with open(path, "a") as f:
                f.write("user carol on >c-pw +bogus\n")
            with RawClient(fkv.port) as c:
                got = c.command("ACL", "LOAD")
                self.assertIsInstance(got, RespError)
                self.assertIn(":4: Error in user declaration '+bogus'", got.message)
                self.assertEqual(c.command("ACL", "USERS"), ["alice", "bob", "default"])
        finally:
            fkv.stop()

    def test_users_and_aclfile_together_refuse_to_start(self):
        tmp = tempfile.mkdtemp(prefix="fkv-aclboth-")
        path = os.path.join(tmp, "users.acl")
        with open(path, "w") as f:
            f.write("user alice on >a ~* +@all\n")
        fkv = ServerProcess(SERVER_BINARY, directives=[("aclfile", path), ("user", ["bob", "on"])])
        with self.assertRaises(ServerError) as e:
            fkv.start()
        self.assertIn("aclfile at the same time", str(e.exception))

    def test_a_bad_user_line_refuses_to_start(self):
        fkv = ServerProcess(SERVER_BINARY, directives=[("user", ["bob", "on", "+nosuch"])])
        with self.assertRaises(ServerError) as e:
            fkv.start()
        self.assertIn("Error in user declaration '+nosuch'", str(e.exception))

    def test_requirepass_is_the_default_users_password(self):
        fkv = ServerProcess(SERVER_BINARY, directives=[("requirepass", "s3cret"), ("user", ["ro", "on", ">r", "+get",
                                                                                             "allkeys"])]).start()
        try:
            with RawClient(fkv.port) as c:
                self.assertEqual(c.command("GET", "k"), RespError("NOAUTH Authentication required."))
                self.assertEqual(c.command("AUTH", "s3cret"), "OK")
                self.assertEqual(c.command("ACL", "WHOAMI"), "default")
                self.assertEqual(c.command("AUTH", "ro", "r"), "OK")
                self.assertEqual(c.command("ACL", "WHOAMI"), RespError(NOPERM_CMD % "acl|whoami"))
                self.assertEqual(c.command("HELLO", "3", "AUTH", "default", "s3cret")["proto"], 3)
                self.assertEqual(c.command("CONFIG", "SET", "requirepass", ""), "OK")
            with RawClient(fkv.port) as c:
                self.assertEqual(c.command("GET", "k"), None)
        finally:
            fkv.stop()


class AuditLogTests(unittest.TestCase):
    """audit-log: the events, no password in the file, rotation by SIGHUP."""

    def read_events(self, path):
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def wait_event(self, path, pred, what):
        return wait_until(lambda: next((e for e in self.read_events(path) if pred(e)), None), timeout=10, what=what)

    def test_events_no_passwords_and_rotation(self):
        tmp = tempfile.mkdtemp(prefix="fkv-audit-")
        path = os.path.join(tmp, "audit.log")
        fkv = ServerProcess(SERVER_BINARY, directives=[
            ("registry", REGISTRY), ("save", ""), ("audit-log", path), ("requirepass", "default-secret"),
            ("user", ["ro", "on", ">ro-secret", "~user:*", "+@read"])]).start()
        self.addCleanup(fkv.stop)
        with RawClient(fkv.port) as c:
            self.assertEqual(c.command("AUTH", "ro", "wrong-secret"), RespError(WRONGPASS))
            self.assertEqual(c.command("AUTH", "ro", "ro-secret"), "OK")
            self.assertEqual(c.command("SET", "user:1", "x"), RespError(NOPERM_CMD % "set"))
            self.assertEqual(c.command("AUTH", "default-secret"), "OK")
            self.assertEqual(c.command("ACL", "SETUSER", "bob", "on", ">bob-secret", "+get"), "OK")
            self.assertEqual(c.command("ACL", "DELUSER", "bob"), 1)
            self.assertEqual(c.command("CONFIG", "SET", "maxclients", "500"), "OK")
            self.assertEqual(c.command("CONFIG", "SET", "requirepass", "new-secret"), "OK")
            self.assertEqual(c.command("FREGISTRY", "RELOAD"), "OK")
            self.assertEqual(c.command("FLUSHALL"), "OK")
        last = self.wait_event(path, lambda e: e["event"] == "flushall", "the flushall line")
        events = self.read_events(path)
        kinds = [e["event"] for e in events]
        self.assertEqual(kinds, ["auth_failure", "denied", "acl_change", "acl_change", "config_set", "config_set",
                                 "registry_reload", "flushall"])
        for e in events:
            self.assertEqual(set(e) >= {"ts", "event", "client", "user", "client_id"}, True, e)
            self.assertTrue(e["client"].startswith("127.0.0.1:"), e)
            self.assertRegex(e["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual((events[0]["user"], events[1]["user"], events[1]["reason"], events[1]["object"]),
                         ("ro", "ro", "command", "set"))
        self.assertEqual((events[2]["command"], events[2]["target"], events[2]["rules"]),
                         ("SETUSER", "bob", "on >(redacted) +get"))
        self.assertEqual((events[4]["name"], events[4]["value"]), ("maxclients", "500"))
        self.assertEqual((events[5]["name"], events[5]["value"]), ("requirepass", "(redacted)"))
        self.assertEqual(events[6]["result"], "ok")
        self.assertEqual((last["command"], last["user"]), ("FLUSHALL", "default"))
        with open(path) as f:
            text = f.read()
        for secret in ("wrong-secret", "ro-secret", "default-secret", "bob-secret", "new-secret"):
            self.assertNotIn(secret, text)
        # Rotation: the file is moved away, SIGHUP reopens it by name.
        os.rename(path, path + ".1")
        fkv.proc.send_signal(signal.SIGHUP)
        self.wait_event(path, lambda e: e["event"] == "registry_reload" and e["client"] == "signal", "the SIGHUP line")
        self.assertEqual(len(self.read_events(path + ".1")), len(events))
        with RawClient(fkv.port) as c:
            self.assertEqual(c.command("AUTH", "new-secret"), "OK")
            self.assertEqual(c.command("FLUSHDB"), "OK")
        self.wait_event(path, lambda e: e["event"] == "flushall" and e["command"] == "FLUSHDB", "FLUSHDB in the new file")
        fkv.stop()
        self.assertEqual(self.read_events(path)[-1]["event"], "shutdown")
        self.assertEqual(self.read_events(path)[-1]["signal"], "SIGTERM")


class AclParityTests(unittest.TestCase):
    """The same ACL commands on redis-server 7 and featurekv, replies compared."""

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisServer()
        cls.fkv = ServerProcess(SERVER_BINARY, directives=[("save", "")]).start()

    @classmethod
    def tearDownClass(cls):
        cls.fkv.stop()
        cls.redis.stop()

    def setUp(self):
        self.rc = RawClient(self.redis.port, timeout=10)
        self.fc = RawClient(self.fkv.port, timeout=10)
        self.addCleanup(self.rc.close)
        self.addCleanup(self.fc.close)

    def same(self, *args, rc=None, fc=None):
        want = (rc or self.rc).command(*args)
        got = (fc or self.fc).command(*args)
        self.assertEqual(got, want, "reply to %r: redis %r, featurekv %r" % (args, want, got))
        return got

    def test_acl_commands_reply_as_redis(self):
        # (single commands of one user are listed in name order here, in
        # hash-table order by Redis: these users have one each)
        self.same("ACL", "SETUSER", "p", "on", ">pw", "~k:*", "+get")
        self.same("ACL", "GETUSER", "p")
        self.same("ACL", "GETUSER", "nosuch")
        self.same("ACL", "SETUSER", "p", "+@hash", "-hdel", "+hdel")
        self.same("ACL", "GETUSER", "p")
        self.same("ACL", "SETUSER", "p", "bad")
        self.same("ACL", "SETUSER", "p", "+nosuch")
        self.same("ACL", "SETUSER", "p", "#abc")
        self.same("ACL", "SETUSER", "p", "~*", "~x")
        self.same("ACL", "SETUSER", "a b")
        self.same("ACL", "DELUSER", "default")
        self.same("ACL", "DELUSER", "nosuch", "p2")
        self.same("ACL", "WHOAMI")
        self.same("ACL", "CAT", "nosuch")
        self.same("ACL", "LOG", "x")
        self.same("ACL", "GENPASS", "0")
        self.same("ACL", "SAVE")
        self.same("ACL", "LOAD")
        self.same("ACL", "DRYRUN", "nosuch", "get", "x")
        self.same("ACL", "DRYRUN", "p", "nosuch")
        self.same("ACL", "DRYRUN", "p", "get", "k:1")
        self.same("ACL", "DRYRUN", "p", "get", "other")
        self.same("ACL", "DRYRUN", "p", "del", "k:1")
        self.same("ACL", "SETUSER", "p", "reset")
        self.same("ACL", "SETUSER", "p", "on", ">pw", "allkeys", "allcommands", "-flushall")
        self.same("ACL", "GETUSER", "p")
        self.same("ACL", "DELUSER", "p")
        self.assertEqual(len(self.fc.command("ACL", "GENPASS")), 64)
        self.assertEqual(len(self.fc.command("ACL", "GENPASS", "10")), 3)

    def test_command_info_carries_the_acl_categories(self):
        for name in ("get", "set", "hgetall", "del", "flushall", "ping", "multi", "config", "client", "keys"):
            want = self.rc.command("COMMAND", "INFO", name)[0][6]
            self.assertEqual(self.fc.command("COMMAND", "INFO", name)[0][6], want, name)
        self.assertEqual(self.fc.command("COMMAND", "INFO", "fget")[0][6], ["@read", "@fast", "@feature"])
        self.assertEqual(self.fc.command("COMMAND", "INFO", "fregistry")[0][6], ["@admin", "@slow", "@dangerous",
                                                                                  "@feature"])

    def test_denials_reply_as_redis(self):
        for c in (self.rc, self.fc):
            self.assertEqual(c.command("ACL", "SETUSER", "q", "on", ">pw", "~k:*", "+@read", "+@connection",
                                       "-@dangerous"), "OK")
            self.addCleanup(c.command, "ACL", "DELUSER", "q")
        with RawClient(self.redis.port) as r, RawClient(self.fkv.port) as f:
            self.same("AUTH", "q", "wrong", rc=r, fc=f)
            self.same("AUTH", "nosuch", "pw", rc=r, fc=f)
            self.same("AUTH", "q", "pw", rc=r, fc=f)
            for args in [("GET", "k:1"), ("GET", "x"), ("SET", "k:1", "v"), ("MGET", "k:1", "k:2"), ("MGET", "k:1", "x"),
                         ("HGETALL", "k:h"), ("EXISTS", "k:1", "y"), ("FLUSHALL",), ("KEYS", "*"), ("DBSIZE",),
                         ("CLIENT", "SETNAME", "me"), ("CLIENT", "KILL", "ID", "999999"), ("CONFIG", "GET", "port"),
                         ("ACL", "WHOAMI"), ("PING",), ("INFO", "server"), ("TTL", "k:1"), ("TYPE", "z")]:
                self.same(*args, rc=r, fc=f)
        with RawClient(self.redis.port) as r, RawClient(self.fkv.port) as f:
            self.same("AUTH", "pw", rc=r, fc=f)  # no password on the default user


if __name__ == "__main__":
    unittest.main(verbosity=2)
