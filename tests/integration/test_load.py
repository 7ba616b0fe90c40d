#!/usr/bin/python3
"""featurekv-load against a real featurekv-server with conf/features.yaml.

usage: test_load.py SERVER_BINARY LOAD_BINARY [unittest args]

- LoadAggregatesTest: a seeded clickstream of a few thousand events (out of
  order, ties, a few ahead of the clock) goes through featurekv-load; every
  feature of every user and product (FMGET ... AT a fixed time) equals a
  reference computed in Python from the same file.
- RejectedLinesTest: malformed lines among good ones: the summary names
  exactly their line numbers and reasons (the first 10) and counts every
  reason; the good lines are all applied; exit 0.
- InputAndFailureTest: standard input, AUTH, connection refused, a line
  over proto-max-bulk-len (the server's error, exit 1, where to resume),
  unknown source, usage errors (exit 2).

Timestamps are in seconds (the registry's unit) and placed within the last
50 minutes before `now0`; queries use AT now0, so window contents do not move
while the test runs. The tests assert they finish well before the oldest
event could become too old for its aggregation. Everything is on 127.0.0.1;
every wait has a deadline.
"""
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fkv_testlib import Incomplete, ServerProcess, decode_reply  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SERVER = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "server", "featurekv-server")
LOADER = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "build", "tools", "featurekv-load")
REGISTRY = os.path.join(ROOT, "conf", "features.yaml")
ACTIONS = ["click", "view", "view", "view", "click", "add_to_cart", "purchase"]
MAX_RUN_S = 500  # events are at most 3000 s old; the 1h aggregations keep them for 600 s more

DONE_RE = re.compile(r"^featurekv-load: done: (\d+) lines \((\d+) blank\), (\d+) events, (\d+) accepted, "
                     r"(\d+) rejected in [\d.]+ s \(\d+ events/s\)$", re.M)
STOPPED_RE = re.compile(r"^featurekv-load: stopped: (\d+) lines \((\d+) blank\), (\d+) events, (\d+) accepted, "
                        r"(\d+) rejected, (\d+) unconfirmed \(resume from line (\d+)\) in [\d.]+ s", re.M)

# conf/features.yaml: (feature, kind, predicate, field, window ms, resolution ms). The resolutions are
# the server's defaults (smallest window / 60, at least 1 s); FeatureTableTest checks them with FINFO.
USER_FEATURES = [
    ("clicks_1m", "count", lambda e: e["action"] == "click", None, 60_000, 1000),
    ("clicks_5m", "count", lambda e: e["action"] == "click", None, 300_000, 1000),
    ("clicks_1h", "count", lambda e: e["action"] == "click", None, 3_600_000, 1000),
    ("purchases_1h", "count", lambda e: e["action"] == "purchase", None, 3_600_000, 60_000),
    ("purchases_24h", "count", lambda e: e["action"] == "purchase", None, 86_400_000, 60_000),
    ("products_1h", "count_distinct", None, "product_id", 3_600_000, 60_000),
    ("last_action", "last", None, "action", None, None),
    ("recent_products", "last_n", None, "product_id", 10, None),
]
PRODUCT_FEATURES = [
    ("views_5m", "count", lambda e: e["action"] == "view", None, 300_000, 5000),
    ("views_1h", "count", lambda e: e["action"] == "view", None, 3_600_000, 5000),
    ("purchases_1h", "count", lambda e: e["action"] == "purchase", None, 3_600_000, 60_000),
    ("buyers_24h", "count_distinct", lambda e: e["action"] == "purchase", "user_id", 86_400_000, 1_440_000),
]
RESOLUTIONS = {("user_activity", "clicks"): 1000, ("user_activity", "purchases"): 60_000,
               ("user_activity", "products"): 60_000, ("product_popularity", "views"): 5000,
               ("product_popularity", "purchases"): 60_000, ("product_popularity", "buyers"): 1_440_000}


def is_key(v):
    return isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))


class Model:
    """The accepted events per entity key, in arrival (= file) order.

    Fed only with events whose fields are present and well typed except the
    entity keys: a view takes an event when its key is an int or a string.
    (A view whose aggregation lacks its field skips the event: the user view
    reads product_id and action, the product view's buyers reads user_id of
    purchases; the asserts keep such events out of here.)"""

    def __init__(self):
        self.points = defaultdict(list)  # "user:7" -> [(ts_ms, seq, event)]
        self.seq = 0

    def add(self, ev):
        self.seq += 1
        ts = ev["timestamp"] * 1000
        if is_key(ev.get("user_id")):
            assert is_key(ev.get("product_id")) and isinstance(ev.get("action"), str), ev
            self.points["user:%s" % ev["user_id"]].append((ts, self.seq, ev))
        if is_key(ev.get("product_id")):
            assert ev["action"] != "purchase" or is_key(ev.get("user_id")), ev
            self.points["product:%s" % ev["product_id"]].append((ts, self.seq, ev))

    def value(self, key, feature, T):
        _, kind, pred, field, w, res = feature
        pts = self.points[key]
        if kind in ("last", "last_n"):  # the n newest by (time, arrival); with AT those up to T
            n = 1 if kind == "last" else w
            newest = sorted(pts, key=lambda p: (p[0], p[1]), reverse=True)[:n]
            items = [str(ev[field]) for ts, _, ev in newest if ts <= T]
            return (items[0] if items else None) if kind == "last" else items
        inside = [ev for ts, _, ev in pts if T - w < ts // res * res <= T and (pred is None or pred(ev))]
        return len(inside) if kind == "count" else len({str(ev[field]) for ev in inside})

    def expected(self, keys, features, T):
        return [[self.value(k, f, T) if self.points[k] else None for f in features] for k in keys]


def clickstream(rng, n, now_s, users, products, first_user=0):
    """n events within the last 50 minutes (2% up to a minute ahead), out of order, with ties."""
    out = []
    for _ in range(n):
        ts = now_s + rng.randint(1, 60) if rng.random() < 0.02 else now_s - rng.randint(0, 3000)
        out.append({"user_id": first_user + rng.randrange(users), "product_id": rng.randrange(products),
                    "action": rng.choice(ACTIONS), "timestamp": ts})
    return out


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))


def run_loader(port, *args, stdin=None, timeout=120):
    argv = [LOADER, "--port", str(port), *args] if port else [LOADER, *args]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)


def done_counts(test, p):
    """(lines, blank, events, accepted, rejected) of the summary; asserts exit 0 and a quiet stdout."""
    test.assertEqual(p.returncode, 0, p.stderr)
    test.assertEqual(p.stdout, "")
    m = DONE_RE.search(p.stderr)
    test.assertIsNotNone(m, p.stderr)
    return tuple(int(x) for x in m.groups())


def events_applied(r):
    return int(r.info("ingest")["events_applied"])


class ServerTest(unittest.TestCase):
    shards = 3
    directives = []

    @classmethod
    def setUpClass(cls):
        cls.server = ServerProcess(SERVER, shards=cls.shards,
                                   directives=[("registry", REGISTRY)] + cls.directives).start()
        cls.tmp = tempfile.TemporaryDirectory(prefix="fkv-load-")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        cls.server.stop()

    def setUp(self):
        self.r = self.server.redis(decode_responses=True)
        self.assertTrue(self.r.flushall())
        self.t0 = time.monotonic()

    def tearDown(self):
        self.r.close()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def check_model(self, model, T):
        """Every feature of every entity in the model equals the server's (FMGET ... AT T)."""
        self.assertLess(time.monotonic() - self.t0, MAX_RUN_S, "too slow: events may have become too old")
        for entity, features in (("user", USER_FEATURES), ("product", PRODUCT_FEATURES)):
            keys = sorted(k for k in model.points if k.startswith(entity + ":"))
            self.assertTrue(keys)
            names = [f[0] for f in features]
            got = self.r.execute_command("FMGET", *keys, "FEATURES", *names, "AT", T)
            want = model.expected(keys, features, T)
            for key, g, w in zip(keys, got, want):
                self.assertEqual(dict(zip(names, g)), dict(zip(names, w)), key)


class FeatureTableTest(ServerTest):
    def test_the_reference_table_matches_the_registry(self):
        seen = set()
        for view in ("user_activity", "product_popularity"):
            info = self.r.execute_command("FINFO", view)
            info = dict(zip(info[::2], info[1::2]))
            for agg in info["aggregations"]:
                agg = dict(zip(agg[::2], agg[1::2]))
                if agg["agg"] in ("count", "count_distinct"):
                    self.assertEqual(agg["resolution_ms"], RESOLUTIONS.get((view, agg["name"])), (view, agg))
                    seen.add((view, agg["name"]))
        self.assertEqual(seen, set(RESOLUTIONS))


class LoadAggregatesTest(ServerTest):
    def test_every_feature_matches_the_file(self):
        now_s = int(time.time())
        rng = random.Random(20240611)
        events = clickstream(rng, 4000, now_s, users=60, products=25)
        write_lines(self.path("clicks.jsonl"), [json.dumps(e) for e in events])
        before = events_applied(self.r)
        # small batches and a short pipeline: ~60 commands, several in flight at a time
        p = run_loader(self.server.port, "--batch", "64", "--pipeline", "4", self.path("clicks.jsonl"))
        self.assertEqual(done_counts(self, p), (4000, 0, 4000, 4000, 0))
        self.assertNotIn("rejected by reason", p.stderr)
        self.assertEqual(events_applied(self.r) - before, 4000)
        model = Model()
        for e in events:
            model.add(e)
        self.check_model(model, now_s * 1000)
        # and the aggregates are not trivially empty
        self.assertGreater(sum(model.value(k, USER_FEATURES[2], now_s * 1000) for k in model.points
                               if k.startswith("user:")), 500)

    def test_defaults_send_everything_once(self):
        now_s = int(time.time())
        events = clickstream(random.Random(7), 3000, now_s, users=20, products=10)
        write_lines(self.path("defaults.jsonl"), [json.dumps(e) for e in events])
        p = run_loader(self.server.port, self.path("defaults.jsonl"))  # --batch 500 --pipeline 16
        self.assertEqual(done_counts(self, p), (3000, 0, 3000, 3000, 0))
        model = Model()
        for e in events:
            model.add(e)
        self.check_model(model, now_s * 1000)


class RejectedLinesTest(ServerTest):
    def test_bad_lines_are_reported_by_line_number_and_the_rest_applied(self):
        now_s = int(time.time())
        T = now_s * 1000
        rng = random.Random(99)
        good = clickstream(rng, 420, now_s, users=15, products=8)
        bad = {  # line number -> (text, reason)
            1: ('{"user_id": 3, "product_id": 4, "action": "click", "timestamp": ', "invalid_json"),
            7: ("not json at all", "invalid_json"),
            52: ("[1, 2, 3]", "not_object"),
            99: ('{"user_id": 1, "product_id": 2, "action": "click"}', "missing_timestamp"),
            100: ('{"user_id": 1, "product_id": 2, "action": "click", "timestamp": "yesterday"}', "bad_timestamp"),
            101: ('{"action": "view", "timestamp": %d}' % now_s, "missing_key"),
            150: ('{"user_id": [1], "product_id": {"id": 2}, "action": "view", "timestamp": %d}' % now_s, "bad_key"),
            151: ('{"user_id": 1.5, "product_id": true, "action": "view", "timestamp": %d}' % now_s, "bad_key"),
            260: ('{"user_id": 1, "product_id": 2, "action": "view", "timestamp": %d}' % (now_s + 3600), "future"),
            300: ('{"user_id": 1, "product_id": 2, "action": "click", "timestamp": null}', "missing_timestamp"),
            # beyond the first 10: counted by reason, not listed
            301: ("{}", "missing_timestamp"),
            420: ("42", "not_object"),
        }
        # the entity keys are per view: without a (good) user_id the product view still takes the event
        partial = {
            30: {"product_id": 5, "action": "view", "timestamp": now_s - 10},
            31: {"user_id": None, "product_id": 5, "action": "view", "timestamp": now_s - 20},
            32: {"user_id": False, "product_id": 6, "action": "view", "timestamp": now_s - 30},
        }
        blank = {2, 60, 61, 250}
        lines, model, it = [], Model(), iter(good)
        for n in range(1, 421):
            if n in bad:
                lines.append(bad[n][0])
            elif n in partial:
                lines.append(json.dumps(partial[n]))
                model.add(partial[n])
            elif n in blank:
                lines.append("   " if n == 60 else "")
            else:
                ev = next(it)
                lines.append(json.dumps(ev) + ("\r" if n == 5 else ""))  # a CRLF line too
                model.add(ev)
        write_lines(self.path("mixed.jsonl"), lines)
        info0 = self.r.info("ingest")
        p = run_loader(self.server.port, "--batch", "50", "--pipeline", "3", self.path("mixed.jsonl"))
        n_events = 420 - len(blank)
        self.assertEqual(done_counts(self, p), (420, len(blank), n_events, n_events - len(bad), len(bad)))

        reasons = defaultdict(int)
        for _, reason in bad.values():
            reasons[reason] += 1
        want = ", ".join("%s %d" % (r, c) for r, c in sorted(reasons.items()))
        self.assertIn("\nfeaturekv-load: rejected by reason: %s\n" % want, p.stderr)
        listed = re.findall(r"^featurekv-load: rejected line (\d+): (\w+): (.*)$", p.stderr, re.M)
        first10 = sorted(bad)[:10]
        self.assertEqual([(int(n), r) for n, r, _ in listed], [(n, bad[n][1]) for n in first10], p.stderr)
        for (_, _, text), n in zip(listed, first10):
            self.assertEqual(text, bad[n][0][:80] + ("..." if len(bad[n][0]) > 80 else ""))

        info = self.r.info("ingest")  # the server saw the same: same path as FEVENT
        for reason, count in reasons.items():
            key = "rejected_" + reason
            self.assertEqual(int(info.get(key, 0)) - int(info0.get(key, 0)), count, key)
        self.assertEqual(int(info["events_applied"]) - int(info0["events_applied"]), n_events - len(bad))
        self.check_model(model, T)
        self.assertEqual(self.r.exists("user:None", "user:null", "user:False", "user:false"), 0)
        self.assertEqual(self.r.execute_command("FGET", "product:6", "views_5m", "AT", T),
                         [model.value("product:6", PRODUCT_FEATURES[0], T)])
        self.assertGreater(model.value("product:6", PRODUCT_FEATURES[0], T), 0)


class InputAndFailureTest(ServerTest):
    directives = [("requirepass", "s3cret"), ("proto-max-bulk-len", "4096")]

    def setUp(self):
        self.r = self.server.redis(decode_responses=True, password="s3cret")
        self.assertTrue(self.r.flushall())
        self.t0 = time.monotonic()

    def test_reads_standard_input_with_auth(self):
        now_s = int(time.time())
        events = clickstream(random.Random(3), 300, now_s, users=10, products=5)
        text = "\n".join(json.dumps(e) for e in events)  # no newline after the last line
        p = run_loader(self.server.port, "--password", "s3cret", "--batch", "1", "-", stdin=text)
        self.assertEqual(done_counts(self, p), (300, 0, 300, 300, 0))
        model = Model()
        for e in events:
            model.add(e)
        self.check_model(model, now_s * 1000)

    def test_progress_once_a_second_while_standard_input_trickles_in(self):
        now_s = int(time.time())
        events = clickstream(random.Random(11), 400, now_s, users=10, products=5)
        p = subprocess.Popen([LOADER, "--port", str(self.server.port), "--password", "s3cret", "--batch", "1",
                              "--pipeline", "1", "-"], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        err = []
        reader = threading.Thread(target=lambda: err.extend(p.stderr))
        reader.start()
        progress = re.compile(r"^featurekv-load: (\d+) lines read, (\d+) accepted, 0 rejected, \d+ events/s$")
        try:
            sent, deadline = 0, time.monotonic() + 30
            while not any(progress.match(line) for line in err) and time.monotonic() < deadline and sent < 390:
                p.stdin.write(json.dumps(events[sent]) + "\n")
                p.stdin.flush()
                sent += 1
                time.sleep(0.02)  # pacing the input; the condition is the progress line
            p.stdin.write("".join(json.dumps(e) + "\n" for e in events[sent:]))
            p.stdin.close()
            self.assertEqual(p.wait(timeout=60), 0)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
            reader.join(timeout=10)
            p.stderr.close()
        shown = [progress.match(line) for line in err if progress.match(line)]
        self.assertTrue(shown, err)
        lines_read, accepted = (int(x) for x in shown[0].groups())
        self.assertTrue(0 < accepted <= lines_read < 400, err)
        self.assertRegex(err[-1], r"^featurekv-load: done: 400 lines \(0 blank\), 400 events, 400 accepted, 0 rejected")

    def test_empty_input_sends_nothing(self):
        p = run_loader(self.server.port, "--password", "s3cret", "-", stdin="\n\n")
        self.assertEqual(done_counts(self, p), (2, 2, 0, 0, 0))

    def test_auth_failures_stop_with_exit_1(self):
        write_lines(self.path("one.jsonl"), ['{"user_id": 1, "product_id": 1, "action": "view", "timestamp": 1}'])
        p = run_loader(self.server.port, "--password", "wrong", self.path("one.jsonl"))
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("featurekv-load: AUTH failed: WRONGPASS", p.stderr)
        p = run_loader(self.server.port, self.path("one.jsonl"))
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("featurekv-load: server refused the command (FEVENT of lines 1-1): NOAUTH", p.stderr)
        m = STOPPED_RE.search(p.stderr)
        self.assertIsNotNone(m, p.stderr)
        self.assertEqual([int(x) for x in m.groups()], [1, 0, 1, 0, 0, 1, 1])
        self.assertEqual(self.r.dbsize(), 0)  # nothing applied

    def test_unknown_source_stops_with_exit_1(self):
        write_lines(self.path("one.jsonl"), ['{"user_id": 1, "product_id": 1, "action": "view", "timestamp": 1}'])
        p = run_loader(self.server.port, "--password", "s3cret", "--source", "nosuch", self.path("one.jsonl"))
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("server refused the command (FEVENT of lines 1-1): ERR unknown source 'nosuch'", p.stderr)

    def test_a_line_over_proto_max_bulk_len_gets_the_servers_error(self):
        now_s = int(time.time())
        events = clickstream(random.Random(5), 200, now_s, users=10, products=5)
        lines = [json.dumps(e) for e in events]
        lines[94] = json.dumps(dict(events[94], pad="x" * 5000))  # line 95, in the command of lines 91-100
        write_lines(self.path("long.jsonl"), lines)
        before = events_applied(self.r)
        p = run_loader(self.server.port, "--password", "s3cret", "--batch", "10", "--pipeline", "4",
                       self.path("long.jsonl"))
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("ERR Protocol error: invalid bulk length", p.stderr)
        m = STOPPED_RE.search(p.stderr)
        self.assertIsNotNone(m, p.stderr)
        lines_read, blank, sent, accepted, rejected, unconfirmed, resume = (int(x) for x in m.groups())
        self.assertEqual((accepted, rejected, resume), (90, 0, 91))
        self.assertEqual(sent, accepted + unconfirmed)
        self.assertEqual(events_applied(self.r) - before, 90)  # what the tool confirmed is what the server applied
        with self.server.redis(password="s3cret") as other:
            self.assertTrue(other.ping())  # others are still served

    def test_connection_refused_is_exit_1(self):
        with socket.socket() as s:  # bound, not listening: connecting is refused, and nobody else gets the port
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            write_lines(self.path("one.jsonl"), ["{}"])
            p = run_loader(port, self.path("one.jsonl"), timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(p.stderr, "featurekv-load: cannot connect to 127.0.0.1:%d: Connection refused\n" % port)

    def test_usage_errors_are_exit_2(self):
        one = self.path("one.jsonl")
        write_lines(one, ["{}"])
        for args in ([], ["--help"], ["--batch", "0", one], ["--pipeline", "x", one], ["--port", "70000", one],
                     ["--nosuch", "1", one], [one, one], [one, "--batch"], [self.path("missing.jsonl")]):
            p = run_loader(None, *args, timeout=30)
            self.assertEqual(p.returncode, 2, (args, p.stderr))
            self.assertIn("usage: featurekv-load", p.stderr, args)
        p = run_loader(None, self.path("missing.jsonl"))
        self.assertIn("cannot open %s: No such file or directory" % self.path("missing.jsonl"), p.stderr)


class FakeServer(threading.Thread):
    """Answers FEVENT as featurekv does, but one byte per send (the loader must put partial replies together):
    events containing "bad" are rejected with reason `scripted`; past 3 rejects in a command the list is cut
    short with "; ..." (the loader counts the rest as `unlisted`)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(30)
        self.port = self.listener.getsockname()[1]
        self.commands = []

    def answer(self, cmd):
        events = cmd[2:]
        bad = [i + 1 for i, e in enumerate(events) if "bad" in e]
        if not bad:
            return b":%d\r\n" % len(events)
        items = "; ".join("#%d: scripted" % i for i in bad[:3]) + ("; ..." if len(bad) > 3 else "")
        return ("-ERR %d of %d events rejected: %s\r\n" % (len(bad), len(events), items)).encode()

    def run(self):
        conn, _ = self.listener.accept()
        conn.settimeout(30)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        with conn, self.listener:
            for _ in range(1000000):
                try:
                    cmd, n = decode_reply(buf)
                except Incomplete:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                    continue
                buf = buf[n:]
                self.commands.append(cmd)
                reply = self.answer(cmd)
                for i in range(len(reply)):
                    conn.sendall(reply[i:i + 1])


class PartialRepliesTest(unittest.TestCase):
    def test_replies_arriving_byte_by_byte_and_shortened_reject_lists(self):
        bad_lines = [3, 9, 10, 11, 12, 13, 40, 41, 70, 71, 72, 140]  # --batch 7: lines 8-14 have 5 rejects
        with tempfile.TemporaryDirectory(prefix="fkv-load-") as tmp:
            path = os.path.join(tmp, "f.jsonl")
            write_lines(path, ['{"n": %d%s}' % (n, ', "bad": 1' if n in bad_lines else "") for n in range(1, 151)])
            fake = FakeServer()
            fake.start()
            p = run_loader(fake.port, "--source", "src", "--batch", "7", "--pipeline", "5", path, timeout=60)
            fake.join(timeout=30)
        self.assertEqual(done_counts(self, p), (150, 0, 150, 150 - 12, 12))
        self.assertEqual(len(fake.commands), 22)  # ceil(150 / 7)
        self.assertEqual([c[:2] for c in fake.commands], [["FEVENT", "src"]] * 22)
        self.assertEqual(sum(len(c) - 2 for c in fake.commands), 150)
        self.assertIn("featurekv-load: rejected by reason: scripted 10, unlisted 2\n", p.stderr)
        listed = [int(n) for n in re.findall(r"^featurekv-load: rejected line (\d+): scripted: ", p.stderr, re.M)]
        self.assertEqual(listed, [3, 9, 10, 11, 40, 41, 70, 71, 72, 140])  # 12 and 13 were not named


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]] + sys.argv[3:], verbosity=2)
