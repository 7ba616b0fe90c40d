"""Session windows (docs/commands.md, "Session windows") against a brute-force
model: seeded events, out of order (so late events join and bridge
sessions, and sessions close for good once their last event is the horizon
old), through FEVENT on 1 and 4 shards; every session feature of every user
through FGET, FMGET and AT, FWINDOW's session list, RESP3, a snapshot and
restart in the middle, a reload that keeps them, too old events counted,
and bad definitions refused with file:line.

Usage: test_sessions.py SERVER
"""

import json
import os
import random
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fkv_testlib import ServerProcess  # noqa: E402
import redis  # noqa: E402

SERVER = sys.argv[1] if len(sys.argv) > 1 else "build/server/featurekv-server"
MIN = 60_000
HOUR = 60 * MIN
GAP = 30 * MIN

REGISTRY = """
sources:
  ev:
    topic: ev
    format: json
    timestamp: {field: ts, unit: ms}
entities:
  user: {key: u}
views:
  act:
    entity: user
    source: ev
    ttl: 7d
    features:
      visits: {agg: count, session: {gap: 30m, windows: [6h, 24h]}}
      clicks: {agg: count, where: "kind == 'click'", session: {gap: 30m}}
      spend:  {agg: sum, field: p, session: {gap: 30m, windows: [24h]}}
      low:    {agg: min, field: p, session: {gap: 30m, windows: [24h]}}
      high:   {agg: max, field: p, session: {gap: 30m, windows: [24h]}}
      avg:    {agg: mean, field: p, session: {gap: 30m}}
      pages:  {agg: count_distinct, field: page, session: {gap: 30m, windows: [24h]}}
      page:   {agg: last, field: page, session: {gap: 30m}}
      short:  {agg: count, session: {gap: 30m, windows: [10m]}}
      total:  {agg: count, windows: [24h]}
"""

OPS = {"visits": "count", "clicks": "count", "spend": "sum", "low": "min", "high": "max", "avg": "mean",
       "pages": "count_distinct", "page": "last", "short": "count"}
WINDOWS = {"visits": {"6h": 6 * HOUR, "24h": 24 * HOUR}, "spend": {"24h": 24 * HOUR}, "low": {"24h": 24 * HOUR},
           "high": {"24h": 24 * HOUR}, "pages": {"24h": 24 * HOUR}, "short": {"10m": 10 * MIN}}


def horizon(name):
    """A session closes for good once its last event is this old."""
    return max([GAP] + list(WINDOWS.get(name, {}).values()))


def sessions_of(events, name, now):
    """The sessions of aggregation `name` as the server keeps them, the
    events applied in send order (seq) by the clock `now`: an event joins
    every open session closer than GAP to it; a session whose last event is
    the horizon old is closed (nothing joins it, nothing reads it); an event
    that reaches no open session and is that old itself is too old."""
    where = (lambda e: e["kind"] == "click") if name == "clicks" else None
    closed = now - horizon(name)
    sess = []
    for e in sorted(events, key=lambda e: e["seq"]):
        if where is not None and not where(e):
            continue
        sess = [s for s in sess if s[-1]["ts"] > closed]
        reach = [s for s in sess if e["ts"] < s[-1]["ts"] + GAP and s[0]["ts"] < e["ts"] + GAP]
        if not reach and e["ts"] <= closed:
            continue
        merged = [e] + [x for s in reach for x in s]
        sess = [s for s in sess if all(s is not r for r in reach)]
        sess.append(sorted(merged, key=lambda x: (x["ts"], x["seq"])))
    return sorted(sess, key=lambda s: s[0]["ts"])


def op_value(op, sess):
    if op == "count":
        return len(sess)
    ps = [e["p"] for e in sess]
    if op == "sum":
        return float(sum(ps))
    if op == "min":
        return float(min(ps))
    if op == "max":
        return float(max(ps))
    if op == "mean":
        return sum(ps) / len(ps)
    if op == "count_distinct":
        return len({e["page"] for e in sess})
    if op == "last":  # the newest; ties: the later sent
        return max(sess, key=lambda e: (e["ts"], e["seq"]))["page"]
    raise ValueError(op)


def model(events, name, part, t, now, window=None):
    """The value of <name><part> at t, as the server defines it: sessions
    that start after t are not seen; the current session is the newest one
    still open at t."""
    sess = [s for s in sessions_of(events, name, now) if s[0]["ts"] <= t]
    if part == "sessions":
        return sum(1 for s in sess if s[0]["ts"] > t - window)
    cur = sess[-1] if sess and t - sess[-1][-1]["ts"] < GAP else None
    if part == "start":
        return cur[0]["ts"] if cur else None
    if part == "duration_ms":
        return cur[-1]["ts"] - cur[0]["ts"] if cur else None
    if part == "events":
        return len(cur) if cur else 0
    op = OPS[name]
    if cur is None:
        return {"count": 0, "sum": 0.0, "count_distinct": 0}.get(op)
    return op_value(op, cur)


FEATURES = ([n + "_session" for n in OPS] + [n + "_session_" + p for n in OPS for p in ("start", "duration_ms", "events")]
            + [n + "_sessions_" + w for n in WINDOWS for w in WINDOWS[n]])


def expect(events, feature, t, now):
    name = feature.split("_", 1)[0]
    rest = feature[len(name):]
    if rest.startswith("_sessions_"):
        return model(events, name, "sessions", t, now, WINDOWS[name][rest[len("_sessions_"):]])
    part = rest[len("_session_"):] if rest != "_session" else "value"
    return model(events, name, part, t, now)


def normalize(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


class SessionCase:
    SHARDS = 1

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="fkv-sessions-")
        self.reg = os.path.join(self.dir, "reg.yaml")
        with open(self.reg, "w") as f:
            f.write(REGISTRY)
        self.data = os.path.join(self.dir, "data")
        os.mkdir(self.data)
        self.srv = None

    def tearDown(self):
        if self.srv and self.srv.alive():
            self.srv.kill()

    def start(self):
        self.srv = ServerProcess(SERVER, shards=self.SHARDS, data_dir=self.data,
                                 directives=[("registry", self.reg), ("save", "")]).start()
        return self.srv.redis(decode_responses=True)

    def events(self, rnd, now, users, n):
        """Bursts of activity per user over the last 5 hours, sent shuffled
        within each user (late events join and bridge sessions). None within
        3 minutes of now - 30m (the horizon of aggregations without windows
        or with shorter ones): whether a session is closed then does not
        depend on how long the test takes."""
        out = []
        for u in users:
            t = now - 5 * HOUR + rnd.randrange(HOUR)
            for _ in range(n):
                t += rnd.choice([rnd.randrange(1, 5 * MIN), rnd.randrange(1, 25 * MIN), rnd.randrange(31 * MIN, 90 * MIN)])
                if t >= now - MIN:
                    break
                if abs(t - (now - GAP)) < 3 * MIN:
                    continue
                out.append({"u": u, "ts": t, "p": rnd.randrange(1, 100), "page": "pg%d" % rnd.randrange(6),
                            "kind": rnd.choice(["click", "view"])})
        rnd.shuffle(out)
        for i, e in enumerate(out):
            e["seq"] = i
        return out

    def send(self, r, events):
        for i in range(0, len(events), 200):
            chunk = events[i:i + 200]
            body = [json.dumps({k: v for k, v in e.items() if k != "seq"}) for e in chunk]
            self.assertEqual(r.execute_command("FEVENT", "ev", *body), len(chunk))

    def check(self, r, events, users, at, now, features=FEATURES):
        by_user = {u: [e for e in events if e["u"] == u] for u in users}
        got = r.execute_command("FMGET", *["user:%d" % u for u in users], "FEATURES", *features, "AT", at)
        for u, row in zip(users, got):
            for f, g in zip(features, row):
                want = expect(by_user[u], f, at, now)
                g = normalize(g)
                if isinstance(want, float) and isinstance(g, float):
                    self.assertAlmostEqual(g, want, 6, "user %d %s AT %d" % (u, f, at))
                else:
                    self.assertEqual(g, want, "user %d %s AT %d" % (u, f, at))

    def test_every_session_feature_matches_the_model(self):
        rnd = random.Random(20261203 + self.SHARDS)
        r = self.start()
        now = int(time.time() * 1000)
        users = list(range(1, 41))
        events = self.events(rnd, now, users, 25)
        half = len(events) // 2
        self.send(r, events[:half])
        # A snapshot and restart in the middle: the sessions come back.
        self.assertTrue(r.save())
        self.srv.stop()
        r = self.start()
        self.send(r, events[half:])
        for at in (now, now - 20 * MIN, now - HOUR, now - 3 * HOUR, now - 4 * HOUR - 17 * MIN):
            self.check(r, events, users, at, now)
        # FGET without AT: "now" moved a little; the current session is
        # still open (the last events are minutes old), so the same values.
        t = int(time.time() * 1000)
        u = users[0]
        mine = [e for e in events if e["u"] == u]
        got = r.execute_command("FGET", "user:%d" % u, "visits_session_events", "visits_sessions_24h", "page_session")
        self.assertEqual(got, [expect(mine, "visits_session_events", t, now), expect(mine, "visits_sessions_24h", t, now),
                               expect(mine, "page_session", t, now)])
        # FWINDOW lists the sessions that overlap the window, newest first.
        for u in users[:10]:
            mine = [e for e in events if e["u"] == u]
            want = [[s[0]["ts"], s[-1]["ts"] - s[0]["ts"], len(s), op_value("sum", s)]
                    for s in reversed(sessions_of(mine, "spend", now)) if s[-1]["ts"] > now - 6 * HOUR and s[0]["ts"] <= now]
            got = r.execute_command("FWINDOW", "user:%d" % u, "spend", "30m", "AT", now)
            self.assertEqual([[a, b, c, float(d)] for a, b, c, d in got],
                             [w for w in want if w[0] + w[1] > now - 30 * MIN], u)
            got = r.execute_command("FWINDOW", "user:%d" % u, "visits", "6h", "AT", now)
            self.assertEqual(got, [[w[0], w[1], w[2], w[2]] for w in want], u)
        # A reload that keeps the definitions keeps the sessions.
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.check(r, events, users, now, now)
        # One that drops `spend` frees its sessions; added back it starts
        # empty (and takes new events); `visits` is untouched by both.
        with open(self.reg, "w") as f:
            f.write(REGISTRY.replace("      spend:  {agg: sum, field: p, session: {gap: 30m, windows: [24h]}}\n", ""))
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        with self.assertRaises(redis.ResponseError):
            r.execute_command("FGET", "user:1", "spend_session")
        with open(self.reg, "w") as f:
            f.write(REGISTRY)
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertEqual(r.execute_command("FGET", "user:1", "spend_session", "spend_session_events"), ["0", 0])
        late = {"u": 1, "ts": now - 2 * MIN, "p": 11, "page": "pgx", "kind": "view", "seq": len(events)}
        self.send(r, [late])
        self.assertEqual(r.execute_command("FGET", "user:1", "spend_session", "AT", now), ["11"])
        self.check(r, events + [late], users, now, now, [f for f in FEATURES if not f.startswith("spend")])

    def test_shapes_errors_and_the_bridge(self):
        r = self.start()
        now = int(time.time() * 1000)
        ev = lambda ts, p, page: json.dumps({"u": 7, "ts": ts, "p": p, "page": page, "kind": "click"})
        self.assertEqual(r.execute_command("FEVENT", "ev", ev(now - 3 * HOUR, 5, "a"), ev(now - 3 * HOUR + 20 * MIN, 1, "b"),
                                           ev(now - 3 * HOUR + 70 * MIN, 2, "c")), 3)
        self.assertEqual(r.execute_command("FWINDOW", "user:7", "visits", "6h", "AT", now),
                         [[now - 3 * HOUR + 70 * MIN, 0, 1, 1], [now - 3 * HOUR, 20 * MIN, 2, 2]])
        # An event 25 minutes after the first session and 25 before the
        # second joins the two.
        self.assertEqual(r.execute_command("FEVENT", "ev", ev(now - 3 * HOUR + 45 * MIN, 9, "a")), 1)
        self.assertEqual(r.execute_command("FWINDOW", "user:7", "high", "30m", "AT", now - 3 * HOUR + 80 * MIN),
                         [[now - 3 * HOUR, 70 * MIN, 4, "9"]])
        # Closed at now: no current session.
        self.assertEqual(r.execute_command("FGET", "user:7", "visits_session", "visits_session_start", "spend_session",
                                           "low_session", "page_session", "visits_sessions_6h"), [0, None, "0", None, None, 1])
        # A key without data: nil for every feature, as other features.
        self.assertEqual(r.execute_command("FGET", "user:8", "visits_session", "visits_sessions_6h"), [None, None])
        for args, err in [(["FWINDOW", "user:7", "visits", "6h", "BUCKETS", "1h"], "BUCKETS is for windowed aggregations"),
                          (["FWINDOW", "user:7", "visits", "25h"], "is larger than the 86400000 ms retained"),
                          (["FWINDOW", "user:7", "avg", "31m"], "is larger than the 1800000 ms retained"),
                          (["FSET", "user:7", "page_session", "x"], "")]:
            with self.assertRaises(redis.ResponseError) as cm:
                r.execute_command(*args)
            self.assertIn(err, str(cm.exception))
        # RESP3: doubles as doubles, counts as integers.
        raw = self.srv.raw()
        raw.command("HELLO", "3")
        t = str(now - 3 * HOUR + 80 * MIN)
        self.assertEqual(raw.command("FGET", "user:7", "visits_session", "spend_session", "high_session", "AT", t),
                         [4, 17.0, 9.0])
        info = r.execute_command("FINFO", "act")
        aggs = {a[1]: dict(zip(a[::2], a[1::2])) for a in info[info.index("aggregations") + 1]}
        self.assertEqual((aggs["visits"]["agg"], aggs["visits"]["session_gap_ms"], aggs["visits"]["windows"]),
                         ("count", GAP, ["6h", "24h"]))

    def test_sessions_close_and_too_old_events_are_counted(self):
        r = self.start()
        now = int(time.time() * 1000)
        ev = lambda ts, p: json.dumps({"u": 9, "ts": ts, "p": p, "page": "pg%d" % p, "kind": "view"})
        too_old = lambda: r.info("ingest")["events_too_old"]
        base = too_old()
        # Two hours old: too old for avg, page and short (horizon 30m), not
        # for the 24h ones; the event itself is accepted.
        self.assertEqual(r.execute_command("FEVENT", "ev", ev(now - 2 * HOUR, 1)), 1)
        self.assertEqual(too_old() - base, 3)
        self.assertEqual(r.execute_command("FGET", "user:9", "total_24h", "visits_sessions_24h", "avg_session_events",
                                           "visits_session_events", "AT", now - 2 * HOUR + 1), [1, 1, 0, 1])
        # An event as old joins a session still open (25 minutes before it).
        self.assertEqual(r.execute_command("FEVENT", "ev", ev(now - 20 * MIN, 4), ev(now - 45 * MIN, 8)), 2)
        self.assertEqual(too_old() - base, 3)
        self.assertEqual(r.execute_command("FGET", "user:9", "avg_session_start", "avg_session", "avg_session_events",
                                           "page_session", "short_sessions_10m"),
                         [now - 45 * MIN, "6", 2, "pg4", 0])
        # One that reaches no open session (35 minutes before it) is too old.
        self.assertEqual(r.execute_command("FEVENT", "ev", ev(now - 80 * MIN, 16)), 1)
        self.assertEqual(too_old() - base, 6)
        self.assertEqual(r.execute_command("FGET", "user:9", "avg_session_events", "visits_session_events",
                                           "visits_sessions_24h"), [2, 2, 3])

    def test_a_closed_session_is_seen_by_no_read(self):
        with open(self.reg, "w") as f:
            f.write(REGISTRY + "      blink: {agg: count, session: {gap: 1s, windows: [2s]}}\n")
        r = self.start()
        now = int(time.time() * 1000)
        self.assertEqual(r.execute_command("FEVENT", "ev", json.dumps({"u": 5, "ts": now, "p": 1, "page": "a",
                                                                       "kind": "view"})), 1)
        self.assertEqual(r.execute_command("FGET", "user:5", "blink_session_events", "blink_sessions_2s", "AT", now), [1, 1])
        self.assertEqual(len(r.execute_command("FWINDOW", "user:5", "blink", "2s", "AT", now)), 1)
        deadline = time.time() + 10
        while time.time() * 1000 <= now + 2000 + 50:  # closed 2 s (the horizon) after its last event
            self.assertLess(time.time(), deadline)
            time.sleep(0.05)
        # Read as of its time, the session is gone all the same (whether
        # or not the sweep has freed it yet).
        self.assertEqual(r.execute_command("FGET", "user:5", "blink_session_events", "blink_sessions_2s", "AT", now), [0, 0])
        self.assertEqual(r.execute_command("FWINDOW", "user:5", "blink", "2s", "AT", now), [])
        # And an event that would have joined it starts a session of its own.
        self.assertEqual(r.execute_command("FEVENT", "ev", json.dumps({"u": 5, "ts": now + 500, "p": 1, "page": "a",
                                                                       "kind": "view"})), 1)
        self.assertEqual(r.execute_command("FGET", "user:5", "blink_session_start", "blink_session_events",
                                           "AT", now + 500), [now + 500, 1])

    def test_bad_definitions_are_refused_with_file_and_line(self):
        base = REGISTRY.split("    features:\n")[0] + "    features:\n"
        cases = [
            ("x: {agg: stddev, field: p, session: {gap: 30m}}", "a session aggregation is count, sum, min, max"),
            ("x: {agg: count, session: {gap: 30m}, windows: [1h]}", "'windows' does not go with 'session'"),
            ("x: {agg: count, session: {windows: [1h]}}", "session needs 'gap'"),
            ("x: {agg: count, session: {gap: 0s}}", "bad duration '0s' for gap"),
            ("x: {agg: count, session: {gap: 30m, size: 3}}", "unknown key 'size'"),
            ("x: {agg: count, session: 30m}", "'session' is a mapping"),
            ("x: {agg: sum, session: {gap: 30m}}", "needs a field"),
            ("x: {agg: count, session: {gap: 30m}}\n      x_session: {agg: last, field: page}",
             "feature name 'x_session' defined twice"),
        ]
        for text, want in cases:
            path = os.path.join(self.dir, "bad.yaml")
            with open(path, "w") as f:
                f.write(base + "      " + text + "\n")
            srv = ServerProcess(SERVER, directives=[("registry", path), ("save", "")])
            with self.assertRaises(Exception) as cm:
                srv.start()
            self.assertIn(want, str(cm.exception), text)
            self.assertIn("bad.yaml:", str(cm.exception), text)


class OneShard(SessionCase, unittest.TestCase):
    SHARDS = 1


class FourShards(SessionCase, unittest.TestCase):
    SHARDS = 4


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1] + sys.argv[2:], verbosity=2)
