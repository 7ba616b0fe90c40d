#!/usr/bin/python3
"""Integration tests of featurekv's feature commands (docs/commands.md,
"Feature commands"; the model in docs/architecture.md, "Features").

Run:  /usr/bin/python3 test_features.py [SERVER_BINARY] [unittest args]
The binary comes from argv[1], else $FKV_SERVER, else
../../build/server/featurekv-server relative to this file. Debian's
python3-redis (4.3.4, RESP2 only) is importable from /usr/bin/python3 only;
RESP3 shapes are checked on raw sockets (fkv_testlib.RawClient).

What is here:
- PropertyTests: a brute-force reference model (RefModel) computes every
  aggregate from the raw accepted events by the window rule of
  docs/architecture.md ("Tiles and the window rule"); thousands
  of seeded random events (out of order, duplicates, ties, late, too old,
  ahead of the clock, clearly future, malformed) go through FEVENT, and FGET
  (all names, AT), FMGET and FWINDOW (any window, AT, BUCKETS) are compared
  with the model. Run against 1 and 4 shards.
- FeatureSemanticsTests: one behaviour per test (errors, FSET, keyspace
  integration, RESP2/RESP3 shapes, window boundaries), 1 and 4 shards.
- RegistryValidationTests / RegistryReloadTests: bad files refused with
  file:line while the old registry keeps serving; reconciliation on reload
  and SIGHUP; start-up refusal.
- TypedSourceTests: a typed source (`fields:`) against a model of its
  checks: 800 seeded events of random field types, a snapshot and restart
  in the middle, INFO's reject counters, FINGEST ERRORS; reloads that add,
  drop and change the types, and a bad declaration refused with file:line.
  1 and 4 shards.
- QuantileTests: `agg: quantile` against the exact quantiles of the values
  (within the sketch's 1%), RESP3, FWINDOW, AT, a snapshot and restart,
  reloads that change, drop and re-add it. 1 and 4 shards.
- VersionTests: two versions of a view side by side against a model,
  FREGISTRY DEFAULT moving unqualified names, kept by a snapshot and
  restart and across reloads that drop and re-add a version. 1 and 4 shards.
- ExpiryTests: view TTLs, the active sweep (DBSIZE and used_memory drop
  without reads), tile reclamation.

Time: every event timestamp in the property tests is placed relative to a
`now0` captured before sending, away from every boundary that wall-clock
progress during the test could move (see PropertyRun.zone_clash), so the
expected values are exact; the runs assert they finished inside the time
those margins allow. Everything is on 127.0.0.1; every wait polls a
condition with a deadline.
"""

import copy
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import shutil
import time
import unittest
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fkv_testlib import RawClient, RespError, RespMap, ServerProcess, encode_command, wait_until  # noqa: E402

import redis  # noqa: E402  (python3-redis, Debian)

DEFAULT_BINARY = os.path.normpath(os.path.join(HERE, "..", "..", "build", "server", "featurekv-server"))
SERVER_BINARY = os.environ.get("FKV_SERVER") or DEFAULT_BINARY

SKEW_MS = 5 * 60 * 1000  # default max-event-skew


def now_ms():
    return int(time.time() * 1000)


def err_text(exc):
    """The full error line of a redis-py ResponseError (redis-py strips the
    'ERR ' code but keeps codes it does not know, such as WRONGTYPE)."""
    msg = str(exc)
    return msg if msg.startswith("WRONGTYPE ") else "ERR " + msg


class TempDir:
    def __init__(self, prefix="fkv-feat-"):
        self.path = tempfile.mkdtemp(prefix=prefix)

    def file(self, name, text):
        p = os.path.join(self.path, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def cleanup(self):
        if not os.environ.get("FKV_KEEP_TMP"):
            shutil.rmtree(self.path, ignore_errors=True)


def start_server(registry_path, shards=1, extra=None):
    directives = [("registry", registry_path)]
    directives += list((extra or {}).items())
    return ServerProcess(SERVER_BINARY, shards=shards, directives=directives).start()


# ===========================================================================
# Durations and where-filter semantics (Python side of the reference model)

_DUR_RE = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_DUR_MUL = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000}


def dur_ms(text):
    m = _DUR_RE.match(text)
    assert m, "bad duration in test fixture: %r" % text
    return int(m.group(1)) * _DUR_MUL[m.group(2)]


MISSING = object()


def kind(v):
    """The server's ValueKind of a decoded JSON value."""
    if v is MISSING:
        return "missing"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "double"
    if isinstance(v, str):
        return "string"
    return "other"


def is_number(v):
    return kind(v) in ("int", "double")


def is_scalar(v):
    return kind(v) in ("int", "double", "string", "bool")


def value_text(v):
    """Canonical text of a scalar: strings as they are, numbers in shortest
    round-trip form (an integral double prints without '.0'), true/false."""
    k = kind(v)
    if k == "string":
        return v
    if k == "bool":
        return "true" if v else "false"
    if k == "int":
        return str(v)
    if k == "double":
        r = repr(v)
        assert "e" not in r and "inf" not in r and "nan" not in r, "keep test doubles in plain notation: %r" % v
        return r[:-2] if r.endswith(".0") else r
    raise AssertionError("not a scalar: %r" % (v,))


def _cmp(v, lit):
    """-1/0/1, 2 incomparable, 3 unequal booleans (docs/architecture.md)."""
    kv, kl = kind(v), kind(lit)
    if kv == "int" and kl == "int":
        return (v > lit) - (v < lit)
    if kv in ("int", "double") and kl in ("int", "double"):
        a, b = float(v), float(lit)
        return (a > b) - (a < b)
    if kv == "string" and kl == "string":
        a, b = v.encode(), lit.encode()
        return (a > b) - (a < b)
    if kv == "bool" and kl == "bool":
        return 0 if v == lit else 3
    return 2


def f_eq(v, lit):
    if lit is None:
        return v is MISSING or v is None
    return _cmp(v, lit) == 0


def f_ne(v, lit):
    return not f_eq(v, lit)


def f_in(v, lits):
    return any(f_eq(v, lit) for lit in lits)


def f_order(v, lit, op):
    c = _cmp(v, lit)
    if c in (2, 3):
        return False
    return {"<": c < 0, "<=": c <= 0, ">": c > 0, ">=": c >= 0}[op]


# ===========================================================================
# Registry description shared by the YAML fixture and the reference model

NUMERIC_AGGS = ("sum", "min", "max", "mean", "stddev", "quantile")
WINDOWED_AGGS = ("count",) + NUMERIC_AGGS + ("count_distinct",)
QUANTILE_ACCURACY = 0.01  # the sketch's relative accuracy (docs/architecture.md, "Quantiles")


def quantile_text(q):
    """The name part of a quantile: 0.5 -> p50, 0.999 -> p999."""
    return "p" + ("%.6f" % (q * 100)).rstrip("0").rstrip(".").replace(".", "")


class Agg:
    def __init__(self, name, agg, field=None, where=None, pred=None, windows=(), resolution=None, n=None, q=None):
        self.name, self.kind, self.field = name, agg, field
        self.where, self.pred = where, pred
        assert (where is None) == (pred is None)
        self.windows = list(windows)
        self.windows_ms = [dur_ms(w) for w in self.windows]
        self.resolution = resolution
        self.n = n
        self.qs = list(q or [])
        self.q = None          # set on the per-quantile copies (per_quantile)
        self.agg_name = name   # how FWINDOW names it
        self.windowed = agg in WINDOWED_AGGS
        if self.windowed:
            smallest = min(self.windows_ms)
            self.res = dur_ms(resolution) if resolution else max(1000, smallest // 60 // 1000 * 1000)
            assert all(w % self.res == 0 for w in self.windows_ms)
            self.max_w = max(self.windows_ms)

    def per_quantile(self):
        """A quantile aggregation as one copy per q (same series, same
        windows), each answering its own features; others as themselves."""
        if self.kind != "quantile":
            return [self]
        out = []
        for q in self.qs:
            c = copy.copy(self)
            c.q = q
            c.agg_name = self.name + "_" + quantile_text(q)
            out.append(c)
        return out

    def window_feature_name(self, w):
        return (self.agg_name if self.q is not None else self.name) + "_" + w

    def feature_names(self):
        if not self.windowed:
            return [self.name]
        return [c.window_feature_name(w) for c in self.per_quantile() for w in self.windows]

    def yaml(self):
        parts = ["agg: " + self.kind]
        if self.field:
            parts.append("field: " + self.field)
        if self.where:
            parts.append('where: "%s"' % self.where)
        if self.windowed:
            parts.append("windows: [%s]" % ", ".join(self.windows))
        if self.resolution:
            parts.append("resolution: " + self.resolution)
        if self.n:
            parts.append("n: %d" % self.n)
        if self.qs:
            parts.append("q: [%s]" % ", ".join(repr(q) for q in self.qs))
        return "{%s}" % ", ".join(parts)


class View:
    def __init__(self, name, entity, key_field, ttl, aggs):
        self.name, self.entity, self.key_field, self.ttl, self.aggs = name, entity, key_field, ttl, aggs


class RegistrySpec:
    """One source (timestamp field `ts`, unit ms) and its views."""

    def __init__(self, source, views):
        self.source = source
        self.views = views

    def yaml(self):
        out = ["sources:", "  %s:" % self.source, "    topic: %s" % self.source, "    format: json",
               "    timestamp: {field: ts, unit: ms}", "entities:"]
        seen = set()
        for v in self.views:
            if v.entity not in seen:
                seen.add(v.entity)
                out.append("  %s: {key: %s}" % (v.entity, v.key_field))
        out.append("views:")
        for v in self.views:
            out += ["  %s:" % v.name, "    entity: %s" % v.entity, "    source: %s" % self.source]
            if v.ttl:
                out.append("    ttl: %s" % v.ttl)
            out.append("    features:")
            for a in v.aggs:
                out.append("      %s: %s" % (a.name, a.yaml()))
        return "\n".join(out) + "\n"

    def features_of(self, entity):
        """[(name, view, agg, window_index or None)] in the server's order."""
        out = []
        for v in self.views:
            if v.entity != entity:
                continue
            for a in v.aggs:
                if a.windowed:
                    for c in a.per_quantile():
                        for i, w in enumerate(c.windows):
                            out.append((c.window_feature_name(w), v, c, i))
                else:
                    out.append((a.name, v, a, None))
        return out

    def windowed_aggs(self):
        return [(v, c) for v in self.views for a in v.aggs if a.windowed for c in a.per_quantile()]


def _g(ev, f):
    return ev.get(f, MISSING)


NOT_AHEAD = ("tag != 'ahead'", lambda e: f_ne(_g(e, "tag"), "ahead"))

PROPERTY_SPEC = RegistrySpec("ev", [
    View("ua", "user", "uid", "1d", [
        Agg("n", "count", windows=["1m", "5m", "20m"]),
        Agg("clicks", "count", where="action == 'click'", pred=lambda e: f_eq(_g(e, "action"), "click"),
            windows=["30s", "10m"]),
        Agg("spend", "sum", field="qty", where="action in ['buy', 'cart'] and qty > 0",
            pred=lambda e: f_in(_g(e, "action"), ["buy", "cart"]) and f_order(_g(e, "qty"), 0, ">"),
            windows=["2m", "30m"]),
        Agg("amt", "sum", field="price", where="not (action == 'view')",
            pred=lambda e: not f_eq(_g(e, "action"), "view"), windows=["5m", "1h"]),
        Agg("lo", "min", field="price", windows=["3m", "40m"]),
        Agg("hi", "max", field="price", where="not (cat in [3, 4, 5]) and price >= 1.5",
            pred=lambda e: (not f_in(_g(e, "cat"), [3, 4, 5])) and f_order(_g(e, "price"), 1.5, ">="),
            resolution="10s", windows=["1m", "45m"]),
        Agg("avg", "mean", field="price", where="action != 'view' or qty >= 3",
            pred=lambda e: f_ne(_g(e, "action"), "view") or f_order(_g(e, "qty"), 3, ">="),
            windows=["10m", "1h"]),
        Agg("sd", "stddev", field="price", where="(action == 'click' or action == 'buy') and qty != 0",
            pred=lambda e: (f_eq(_g(e, "action"), "click") or f_eq(_g(e, "action"), "buy")) and f_ne(_g(e, "qty"), 0),
            windows=["6m", "1h"]),
        Agg("items", "count_distinct", field="iid", windows=["2m", "15m"]),
        Agg("cats", "count_distinct", field="cat", where="action == 'buy'",
            pred=lambda e: f_eq(_g(e, "action"), "buy"), windows=["1h"]),
        Agg("lat", "quantile", field="price", q=[0.5, 0.9, 0.99], windows=["5m", "1h"]),
        Agg("last_action", "last", field="action", where=NOT_AHEAD[0], pred=NOT_AHEAD[1]),
        Agg("recent", "last_n", field="iid", where=NOT_AHEAD[0], pred=NOT_AHEAD[1], n=5),
    ]),
    View("ip", "item", "iid", "1d", [
        Agg("views", "count", where="action == 'view'", pred=lambda e: f_eq(_g(e, "action"), "view"),
            windows=["5m", "1h"]),
        Agg("buyers", "count_distinct", field="uid", where="action == 'buy'",
            pred=lambda e: f_eq(_g(e, "action"), "buy"), windows=["30m"]),
        Agg("qty", "sum", field="qty", windows=["10m"]),
        Agg("qq", "quantile", field="qty", where="action != 'view'", pred=lambda e: f_ne(_g(e, "action"), "view"),
            q=[0.25], windows=["10m", "30m"]),
        Agg("last_price", "last", field="price", where=NOT_AHEAD[0], pred=NOT_AHEAD[1]),
    ]),
])


# ===========================================================================
# Reference model


class Approx:
    """An expected double: |got - value| <= tol (tol 0: exact)."""

    def __init__(self, value, tol=0.0):
        self.value, self.tol = value, tol

    def __repr__(self):
        return "Approx(%r, tol=%g)" % (self.value, self.tol)


def tile_start(ts, res):
    return (ts // res) * res


def quantile_expect(values, q):
    """The value of rank floor(q (n - 1)), within the sketch's accuracy."""
    if not values:
        return None
    rank = min(len(values) - 1, int(math.floor(q * (len(values) - 1) * (1 + 1e-12))))
    exact = sorted(values)[rank]
    return Approx(float(exact), QUANTILE_ACCURACY * abs(exact) * (1 + 1e-9))


def aggregate(kind_, values, q=None):
    """Expected value of a windowed aggregate over the raw values."""
    if kind_ == "quantile":
        return quantile_expect(values, q)
    if kind_ == "count":
        return len(values)
    if kind_ == "count_distinct":
        return len(set(values))
    if kind_ == "sum":
        if not values:
            return Approx(0.0)
        if all(isinstance(x, int) for x in values):
            return Approx(float(sum(values)))  # integer sums are exact
        return Approx(math.fsum(values), 1e-9 * max(1.0, math.fsum(abs(x) for x in values)))
    if not values:
        return None
    scale = max(1.0, max(abs(x) for x in values))
    if kind_ == "min":
        return Approx(float(min(values)))
    if kind_ == "max":
        return Approx(float(max(values)))
    mean = math.fsum(values) / len(values)
    if kind_ == "mean":
        return Approx(mean, 1e-9 * scale)
    if kind_ == "stddev":
        var = math.fsum((x - mean) ** 2 for x in values) / len(values)
        return Approx(math.sqrt(var), 1e-9 * scale)
    raise AssertionError(kind_)


class RefModel:
    """Brute force: keeps every applied (ts, seq, value) per entity key, view
    and aggregation; answers by scanning them with the window rule of
    docs/architecture.md ("Tiles and the window rule")."""

    def __init__(self, spec, now, skew_ms=SKEW_MS):
        self.spec, self.now, self.skew = spec, now, skew_ms
        self.series = defaultdict(list)
        self.entities = set()
        self.seq = 0

    # -- ingest --------------------------------------------------------------

    def plan(self, text):
        """(reason, updates): reason '' when accepted; updates
        [(entity_key, view, agg, ts, value)] for accepted events."""
        try:
            ev = json.loads(text)
        except ValueError:
            return "invalid_json", []
        if not isinstance(ev, dict):
            return "not_object", []
        t = ev.get("ts", MISSING)
        if kind(t) in ("missing", "null"):
            return "missing_timestamp", []
        if not is_number(t):
            return "bad_timestamp", []
        ts = t if isinstance(t, int) else int(math.floor(t))
        if ts > self.now + self.skew:
            return "future", []
        first_reason, accepted, updates = "", 0, []
        for v in self.spec.views:
            k = ev.get(v.key_field, MISSING)
            reason = ""
            if kind(k) in ("missing", "null"):
                reason = "missing_key"
            elif kind(k) not in ("string", "int"):
                reason = "bad_key"
            ups = []
            if not reason:
                for a in v.aggs:
                    if a.pred is not None and not a.pred(ev):
                        continue
                    x = None
                    if a.field:
                        f = ev.get(a.field, MISSING)
                        if kind(f) in ("missing", "null"):
                            reason = "missing_field"
                            break
                        if not (is_number(f) if a.kind in NUMERIC_AGGS else is_scalar(f)):
                            reason = "bad_field"
                            break
                        x = f if a.kind in NUMERIC_AGGS else value_text(f)
                    if a.windowed and tile_start(ts, a.res) <= self.now - a.max_w:
                        continue  # too old for this aggregation
                    ups.append((a, x))
            if reason:
                first_reason = first_reason or reason
                continue
            accepted += 1
            key = "%s:%s" % (v.entity, value_text(k))
            updates += [(key, v, a, ts, x) for a, x in ups]
        if accepted == 0:
            return first_reason, []
        return "", updates

    def ingest(self, text):
        reason, updates = self.plan(text)
        if reason:
            return reason
        self.seq += 1
        for key, v, a, ts, x in updates:
            self.entities.add(key)
            self.series[(key, v.name, a.name)].append((ts, self.seq, x))
        return ""

    def fevent_reply(self, reasons):
        """Expected FEVENT reply: the count, or the error text."""
        bad = [(i + 1, r) for i, r in enumerate(reasons) if r]
        if not bad:
            return len(reasons)
        assert len(bad) <= 20, "keep <= 20 rejects per batch (the server abbreviates longer lists)"
        return "ERR %d of %d events rejected: %s" % (len(bad), len(reasons),
                                                    "; ".join("#%d: %s" % b for b in bad))

    # -- queries ------------------------------------------------------------

    def _points(self, key, v, a):
        return self.series.get((key, v.name, a.name), [])

    def window_value(self, key, v, a, T, w, lo=None, hi=None):
        """Aggregate over the tiles whose start s satisfies T - w < s <= T
        (and lo <= s < hi when given: one bucket)."""
        vals = []
        for ts, _, x in self._points(key, v, a):
            s = tile_start(ts, a.res)
            if T - w < s <= T and (lo is None or lo <= s < hi):
                vals.append(1 if a.kind == "count" else x)
        return aggregate(a.kind, vals, a.q)

    def last_items(self, key, v, a, T, as_of=True):
        """Retained items (the n newest by (ts, arrival)); with AT (as_of)
        only those with ts <= T, without AT all of them (the newest accepted
        values, even slightly ahead of the clock)."""
        n = 1 if a.kind == "last" else a.n
        pts = sorted(self._points(key, v, a), key=lambda p: (p[0], p[1]), reverse=True)[:n]
        return [x for ts, _, x in pts if ts <= T or not as_of]

    def feature(self, key, v, a, wi, T, as_of=True):
        if key not in self.entities:
            return None
        if a.windowed:
            return self.window_value(key, v, a, T, a.windows_ms[wi])
        items = self.last_items(key, v, a, T, as_of)
        if a.kind == "last":
            return items[0] if items else None
        return items

    def fget_all(self, key, T, as_of=True):
        if key not in self.entities:
            return []
        entity = key.split(":", 1)[0]
        return [(name, self.feature(key, v, a, wi, T, as_of)) for name, v, a, wi in self.spec.features_of(entity)]

    def fwindow(self, key, v, a, w, T, bucket=None):
        if key not in self.entities:
            return [] if bucket else None
        if not bucket:
            return self.window_value(key, v, a, T, w)
        res = a.res
        first = (T - w) // res * res + res  # smallest tile start > T - w
        last = T // res * res               # largest tile start <= T
        if first > last:
            return []
        groups = defaultdict(list)
        for ts, _, x in self._points(key, v, a):
            s = tile_start(ts, res)
            if T - w < s <= T:
                groups[s // bucket].append(1 if a.kind == "count" else x)
        return [[b * bucket, aggregate(a.kind, groups.get(b, []), a.q)]
                for b in range(first // bucket, last // bucket + 1)]


def mismatch(expected, got):
    """None when got (a redis-py RESP2 reply) matches expected, else a reason."""
    if isinstance(expected, Approx):
        if not isinstance(got, str):
            return "expected a double (bulk string), got %r" % (got,)
        try:
            g = float(got)
        except ValueError:
            return "not a number: %r" % got
        if abs(g - expected.value) > expected.tol:
            return "expected %r, got %r" % (expected, got)
        return None
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return None if got == expected and type(got) is type(expected) else "expected %r, got %r" % (expected, got)
    if isinstance(expected, int):
        return None if type(got) is int and got == expected else "expected integer %r, got %r" % (expected, got)
    if isinstance(expected, list):
        if not isinstance(got, list) or len(got) != len(expected):
            return "expected %r, got %r" % (expected, got)
        for e, g in zip(expected, got):
            m = mismatch(e, g)
            if m:
                return "in %r vs %r: %s" % (expected, got, m)
        return None
    raise AssertionError("unexpected model value %r" % (expected,))


# ===========================================================================
# Property tests


class PropertyRun:
    """One seeded run: generate events, feed them, compare queries."""

    N_EVENTS = 3000
    D_SEND = 8000     # sending must finish within this after now0 (ms)
    D_NOW = 15000     # the no-AT queries must finish within this
    D_ALL = 75000     # everything (AT queries too) within this

    def __init__(self, test, server, seed):
        self.t, self.server, self.seed = test, server, seed
        self.rng = random.Random(seed)
        self.spec = PROPERTY_SPEC
        self.r = server.redis()
        self.now0 = now_ms()
        self.model = RefModel(self.spec, self.now0)
        p = "s%d" % seed
        self.users = ["%su%d" % (p, i) for i in range(36)] + [seed * 1000 + i for i in range(4)]  # 4 integer ids
        self.items = ["%si%d" % (p, i) for i in range(30)]
        self.failures = []

    # -- time zones -----------------------------------------------------------

    def zone_clash(self, ts):
        """True when ts is near a boundary that moves while the test runs:
        the edge of a window at T in [now0, now0 + D_NOW], the too-old edge
        while sending, tile reclamation until the end, or (now0, now0+D_NOW]."""
        now0 = self.now0
        if now0 - 5000 < ts <= now0 + self.D_NOW:
            return True
        for _, a in self.spec.windowed_aggs():
            s = tile_start(ts, a.res)
            if now0 - 5000 < s <= now0 + self.D_NOW:
                return True
            for w in a.windows_ms:
                if now0 - w - 5000 < s <= now0 - w + self.D_NOW:
                    return True
            if now0 - a.max_w - 5000 < s <= now0 - a.max_w + self.D_ALL + 5000:
                return True
        return False

    def pick_ts(self, lo, hi):
        for _ in range(10000):
            ts = self.rng.randint(lo, hi)
            if not self.zone_clash(ts):
                return ts
        raise AssertionError("could not place a timestamp in [%d, %d]" % (lo, hi))

    # -- generation ---------------------------------------------------------

    def good_event(self):
        rng, now0 = self.rng, self.now0
        r = rng.random()
        tag = None
        if r < 0.30:
            ts = self.pick_ts(now0 - 100000, now0)
        elif r < 0.55:
            ts = self.pick_ts(now0 - 13 * 60000, now0)
        elif r < 0.85:
            ts = self.pick_ts(now0 - 3600000 + 90000, now0)
        elif r < 0.93:  # ahead of the clock, well inside max-event-skew
            ts = self.pick_ts(now0 + 40000, now0 + SKEW_MS - 10000)
            tag = "ahead"
        elif r < 0.97:  # clearly too old for every window (2x the largest)
            ts = now0 - 2 * 3600000 - rng.randint(0, 60000)
        else:  # clearly in the future
            ts = now0 + 3600000 + rng.randint(0, 60000)
        ev = {
            "uid": rng.choice(self.users),
            "iid": rng.choice(self.items),
            "action": rng.choices(["view", "click", "cart", "buy"], [5, 3, 1, 1])[0],
            "qty": rng.randint(-2, 9),
            "price": rng.choice([round(rng.uniform(0.5, 200.0), 2), float(rng.randint(1, 50)), rng.randint(1, 99)]),
            "cat": rng.randint(0, 12),
            "ts": ts,
        }
        if tag:
            ev["tag"] = tag
        elif rng.random() < 0.1:
            ev["tag"] = rng.choice(["x", "late"])
        if rng.random() < 0.05 and ts > 0:
            ev["ts"] = ts + rng.choice([0.25, 0.5, 0.75])  # fractional ms: floored
        if rng.random() < 0.03:
            ev["action"] = rng.choice([5, True, "VIEW"])  # odd types: filters do not match, last keeps the text
        return ev

    def bad_event(self, good):
        rng = self.rng
        ev = dict(good)
        choice = rng.randrange(17)
        if choice == 0:
            return rng.choice(['{"uid": "x", "ts": ', "not json", "", "{bad}", '{"uid": 1,}', "[1, 2"])
        if choice == 1:
            return rng.choice(["[1, 2]", "42", '"text"', "null", "true"])
        if choice == 2:
            del ev["ts"]
        elif choice == 3:
            ev["ts"] = None
        elif choice == 4:
            ev["ts"] = rng.choice([str(ev["ts"]), True, [1], {"ms": 1}])
        elif choice == 5:
            del ev["uid"]
            del ev["iid"]
        elif choice == 6:
            ev["uid"] = None
        elif choice == 7:
            ev["uid"] = rng.choice([1.5, True, {"id": 1}, ["a"]])
        elif choice == 8:
            ev["price"] = str(ev["price"])
        elif choice == 9:
            del ev["price"]
        elif choice == 10:
            ev["qty"] = str(ev["qty"])
        elif choice == 11:
            ev["price"] = "x"
            ev["qty"] = "y"
        elif choice == 12:
            ev["iid"] = ["a", "b"]
        elif choice == 13:
            del ev["action"]
        elif choice == 14:
            ev["cat"] = {"c": 1}
            ev["action"] = "buy"
        elif choice == 15:
            ev["iid"] = None
            ev["price"] = None
        else:
            ev["uid"] = rng.choice(self.users)
            del ev["iid"]
        return json.dumps(ev)

    def generate(self):
        texts = []
        for _ in range(self.N_EVENTS):
            r = self.rng.random()
            if r < 0.05 and texts:
                texts.append(self.rng.choice(texts))  # an exact duplicate
            elif r < 0.09 and texts:
                # a tie: same timestamp and user as an earlier event, other values
                try:
                    prev = json.loads(self.rng.choice(texts))
                except ValueError:
                    prev = None
                ev = self.good_event()
                if isinstance(prev, dict) and "ts" in prev and "uid" in prev:
                    ev["ts"], ev["uid"] = prev["ts"], prev["uid"]
                texts.append(json.dumps(ev))
            elif r < 0.16:
                texts.append(self.bad_event(self.good_event()))
            else:
                texts.append(json.dumps(self.good_event()))
        return texts

    # -- sending --------------------------------------------------------------

    def send(self, texts):
        batches, cur, cur_reasons = [], [], []
        target = self.rng.randint(1, 150)
        for text in texts:
            reason, _ = self.model.plan(text)
            if cur and (len(cur) >= target or (reason and sum(1 for x in cur_reasons if x) >= 20)):
                batches.append((cur, cur_reasons))
                cur, cur_reasons = [], []
                target = self.rng.randint(1, 150)
            cur.append(text)
            cur_reasons.append(reason)
        if cur:
            batches.append((cur, cur_reasons))
        pipe = self.r.pipeline(transaction=False)
        for batch, _ in batches:
            pipe.execute_command("FEVENT", self.spec.source, *batch)
        replies = pipe.execute(raise_on_error=False)
        self.t.assertLessEqual(now_ms() - self.now0, self.D_SEND, "sending took too long for the test's time margins")
        rejected = 0
        for (batch, reasons), reply in zip(batches, replies):
            for text, reason in zip(batch, reasons):
                self.t.assertEqual(self.model.ingest(text), reason)
            rejected += sum(1 for x in reasons if x)
            expected = self.model.fevent_reply(reasons)
            got = err_text(reply) if isinstance(reply, redis.ResponseError) else reply
            if got != expected:
                self.failures.append("FEVENT batch of %d: expected %r, got %r" % (len(batch), expected, got))
        return rejected

    # -- comparisons ----------------------------------------------------------

    def check(self, what, expected, got):
        if isinstance(got, redis.ResponseError):
            self.failures.append("%s: error %r, expected %r" % (what, err_text(got), expected))
            return
        m = mismatch(expected, got)
        if m:
            self.failures.append("%s: %s" % (what, m))

    def keys(self, entity, extra_unknown=2):
        vals = self.users if entity == "user" else self.items
        known = ["%s:%s" % (entity, value_text(v)) for v in vals]
        return known + ["%s:s%dnobody%d" % (entity, self.seed, i) for i in range(extra_unknown)]

    def compare_fget_all(self, pipe_results, reqs):
        for (key, T, label), got in zip(reqs, pipe_results):
            exp = self.model.fget_all(key, T, label != "(now)")
            if isinstance(got, redis.ResponseError) or not isinstance(got, list) or len(got) != 2 * len(exp):
                self.failures.append("FGET %s %s: expected %d name/value pairs %r, got %r" % (key, label, len(exp), exp, got))
                continue
            for i, (name, val) in enumerate(exp):
                if got[2 * i] != name:
                    self.failures.append("FGET %s %s: name #%d expected %r, got %r" % (key, label, i, name, got[2 * i]))
                    break
                self.check("FGET %s %s [%s]" % (key, label, name), val, got[2 * i + 1])

    def run(self):
        texts = self.generate()
        rejected = self.send(texts)
        self.t.assertGreater(rejected, 50)
        self.t.assertGreater(len(self.model.entities), 60)
        user_keys, item_keys = self.keys("user"), self.keys("item")
        all_keys = user_keys + item_keys
        rng = self.rng

        # Phase 1: no AT (T = the server's now). The model answers at now0;
        # zone_clash keeps every answer constant until now0 + D_NOW.
        pipe = self.r.pipeline(transaction=False)
        reqs = []
        for key in all_keys:
            pipe.execute_command("FGET", key)
            reqs.append((key, self.now0, "(now)"))
        fmget_reqs = []
        for entity, keys in (("user", user_keys), ("item", item_keys)):
            feats = self.spec.features_of(entity)
            for _ in range(6):
                ks = rng.sample(keys, rng.randint(1, len(keys)))
                fs = rng.sample(feats, rng.randint(1, len(feats)))
                names = [(v.name + "." + n) if rng.random() < 0.3 else n for n, v, a, wi in fs]
                pipe.execute_command("FMGET", *ks, "FEATURES", *names)
                fmget_reqs.append((ks, fs, names, self.now0, "(now)"))
        results = pipe.execute(raise_on_error=False)
        self.t.assertLessEqual(now_ms() - self.now0, self.D_NOW, "no-AT queries finished too late for the margins")
        self.compare_fget_all(results[:len(reqs)], reqs)
        self.compare_fmget(results[len(reqs):], fmget_reqs)
        # The model itself: the no-AT answers really are constant over the span.
        for key in rng.sample(all_keys, 20):
            self.t.assertEqual(repr(self.model.fget_all(key, self.now0)),
                               repr(self.model.fget_all(key, self.now0 + self.D_NOW)),
                               "reference-model self-check: zone_clash left a moving boundary")

        # Phase 2: AT (past, future, and exactly on tile/window edges).
        ats = [self.now0 - 20000, self.now0 - 3 * 60000, self.now0 - 17 * 60000, self.now0 - 44 * 60000,
               self.now0 + 2 * 60000, self.now0 + SKEW_MS, self.now0 - 59 * 60000]
        by_name = {(v.name, a.name): a for v, a in self.spec.windowed_aggs()}
        applied = [(by_name[(vn, an)], pts[0][0]) for (k, vn, an), pts in self.model.series.items()
                   if (vn, an) in by_name and pts]
        for _ in range(8):
            a, ts = rng.choice(applied)
            s = tile_start(ts, a.res)
            w = rng.choice(a.windows_ms)
            ats += [s, s - 1, s + w, s + w - 1]
        pipe = self.r.pipeline(transaction=False)
        reqs = []
        for T in ats:
            for key in rng.sample(user_keys, 10) + rng.sample(item_keys, 6):
                pipe.execute_command("FGET", key, "AT", T)
                reqs.append((key, T, "AT %d" % T))
        fmget_reqs = []
        for entity, keys in (("user", user_keys), ("item", item_keys)):
            feats = self.spec.features_of(entity)
            for _ in range(8):
                T = rng.choice(ats)
                ks = rng.sample(keys, rng.randint(1, 12))
                fs = rng.sample(feats, rng.randint(1, len(feats)))
                names = [n for n, v, a, wi in fs]
                pipe.execute_command("FMGET", *ks, "FEATURES", *names, "AT", T)
                fmget_reqs.append((ks, fs, names, T, "AT %d" % T))
        fw_reqs = []
        for _ in range(700):
            entity = rng.choice(["user", "user", "item"])
            key = rng.choice(user_keys if entity == "user" else item_keys)
            v, a = rng.choice([(v, a) for v, a in self.spec.windowed_aggs() if v.entity == entity])
            mode = rng.randrange(4)
            if mode == 0:
                wtext = rng.choice(a.windows)
            elif mode == 1:
                wtext = "%dms" % rng.randint(1, a.max_w)
            elif mode == 2:
                wtext = "%ds" % rng.randint(1, a.max_w // 1000)
            else:
                wtext = "%dms" % a.max_w
            w = dur_ms(wtext)
            T = rng.choice(ats) if rng.random() < 0.4 else rng.randint(self.now0 - 3600000, self.now0 + SKEW_MS)
            aname = (v.name + "." + a.agg_name) if rng.random() < 0.3 else a.agg_name
            args = ["FWINDOW", key, aname, wtext, "AT", T]
            bucket = None
            # A window holding no tile start (w < resolution) with BUCKETS is
            # an edge with its own test (test_fwindow_buckets_for_window_...).
            covers_a_tile = (T - w) // a.res * a.res + a.res <= T // a.res * a.res
            if rng.random() < 0.5 and covers_a_tile:
                bucket = a.res * rng.choice([1, 2, 3, 7, 30, 60, 600])
                if w // bucket > 500:
                    bucket = a.res * (w // a.res // 50 + 1)
                args += ["BUCKETS", "%dms" % bucket if bucket % 1000 else "%ds" % (bucket // 1000)]
            if rng.random() < 0.2:  # options in the other order
                args = args[:4] + args[6:] + args[4:6]
            pipe.execute_command(*args)
            fw_reqs.append((key, v, a, w, T, bucket, " ".join(map(str, args))))
        results = pipe.execute(raise_on_error=False)
        self.t.assertLessEqual(now_ms() - self.now0, self.D_ALL, "AT queries finished too late for the margins")
        n1, n2 = len(reqs), len(fmget_reqs)
        self.compare_fget_all(results[:n1], reqs)
        self.compare_fmget(results[n1:n1 + n2], fmget_reqs)
        for (key, v, a, w, T, bucket, text), got in zip(fw_reqs, results[n1 + n2:]):
            self.check(text, self.model.fwindow(key, v, a, w, T, bucket), got)
        if self.failures:
            self.t.fail("seed %d: %d mismatches against the reference model, first ones:\n  %s" %
                        (self.seed, len(self.failures), "\n  ".join(self.failures[:12])))

    def compare_fmget(self, results, reqs):
        for (ks, fs, names, T, label), got in zip(reqs, results):
            exp = []
            for k in ks:
                exp.append([self.model.feature(k, v, a, wi, T, label != "(now)") for n, v, a, wi in fs])
            self.check("FMGET %s FEATURES %s %s" % (" ".join(ks), " ".join(names), label), exp, got)


class PropertyTests:
    SHARDS = 1

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.reg_path = cls.tmp.file("features.yaml", PROPERTY_SPEC.yaml())
        cls.server = start_server(cls.reg_path, shards=cls.SHARDS)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.tmp.cleanup()

    def test_reference_model_agrees_seed_11(self):
        PropertyRun(self, self.server, 11 + self.SHARDS * 100).run()

    def test_reference_model_agrees_seed_22(self):
        PropertyRun(self, self.server, 22 + self.SHARDS * 100).run()

    def test_reference_model_agrees_seed_33(self):
        PropertyRun(self, self.server, 33 + self.SHARDS * 100).run()


class SingleShardPropertyTest(PropertyTests, unittest.TestCase):
    SHARDS = 1


class ShardedPropertyTest(PropertyTests, unittest.TestCase):
    SHARDS = 4


# ===========================================================================
# Semantics, one behaviour per test

SEM_REGISTRY = """\
sources:
  clicks:
    topic: clicks
    format: json
    timestamp: {field: ts, unit: s}
  pushes:
    topic: pushes
    format: json
    timestamp: {field: t, unit: us}
  arrivals:
    topic: arrivals
    format: json
entities:
  user: {key: user_id}
  product: {key: product_id}
views:
  activity:
    entity: user
    source: clicks
    ttl: 1h
    features:
      clicks: {agg: count, where: "action == 'click'", windows: [1m, 5m, 1h]}
      spent: {agg: sum, field: amount, where: "action == 'buy'", windows: [1h]}
      last_action: {agg: last, field: action}
      recent: {agg: last_n, field: product_id, n: 3}
  shopping:
    entity: user
    source: clicks
    ttl: 2h
    features:
      clicks: {agg: count, where: "action == 'buy'", windows: [1m]}
      basket: {agg: last, field: product_id}
  popularity:
    entity: product
    source: clicks
    features:
      views: {agg: count, windows: [5m]}
      daily: {agg: count, windows: [2h, 1d]}
  pushed:
    entity: user
    source: pushes
    ttl: 1h
    features:
      tier: {agg: last, field: tier}
      seen: {agg: count, windows: [1m]}
  arrived:
    entity: user
    source: arrivals
    ttl: 1h
    features:
      hits: {agg: count, windows: [1m]}
"""

USER_FEATURES = ["clicks_1m", "clicks_5m", "clicks_1h", "spent_1h", "last_action", "recent",
                 "clicks_1m", "basket", "tier", "seen_1m", "hits_1m"]


class FeatureSemanticsTests:
    SHARDS = 1

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.reg_path = cls.tmp.file("features.yaml", SEM_REGISTRY)
        cls.server = start_server(cls.reg_path, shards=cls.SHARDS)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.tmp.cleanup()

    def setUp(self):
        self.r = self.server.redis()
        self.uid = "%s-%d" % (self._testMethodName, self.SHARDS)

    def tearDown(self):
        self.r.close()

    # -- helpers --------------------------------------------------------------

    def click(self, ts_s, action="click", user=None, product="p1", **extra):
        ev = {"ts": ts_s, "action": action}
        if user is not False:
            ev["user_id"] = self.uid if user is None else user
        if product is not None:
            ev["product_id"] = product
        ev.update(extra)
        return json.dumps(ev)

    def fevent(self, source, *events):
        try:
            return self.r.execute_command("FEVENT", source, *events)
        except redis.ResponseError as e:
            return err_text(e)

    def cmd(self, *args):
        try:
            return self.r.execute_command(*args)
        except redis.ResponseError as e:
            return err_text(e)

    def now_s(self):
        return int(time.time())

    def assertRejected(self, event, reason, source="clicks"):
        self.assertEqual(self.fevent(source, event), "ERR 1 of 1 events rejected: #1: %s" % reason)

    # -- FEVENT -------------------------------------------------------------------

    def test_fevent_replies_number_of_accepted_events(self):
        t = self.now_s() - 10
        self.assertEqual(self.fevent("clicks", self.click(t), self.click(t - 1), self.click(t - 2, "view")), 3)
        self.assertEqual(self.cmd("FGET", "user:" + self.uid, "activity.clicks_1m", "last_action"), [2, "click"])

    def test_fevent_error_names_positions_and_reasons_and_applies_the_rest(self):
        t = self.now_s() - 10
        reply = self.fevent("clicks", self.click(t), "{oops", self.click(t - 1), json.dumps({"ts": t + 3600}),
                            self.click(t - 2))
        self.assertEqual(reply, "ERR 2 of 5 events rejected: #2: invalid_json; #4: future")
        self.assertEqual(self.cmd("FGET", "user:" + self.uid, "activity.clicks_1m"), [3])

    def test_fevent_rejects_invalid_json(self):
        self.assertRejected('{"user_id": "a", "ts": ', "invalid_json")

    def test_fevent_rejects_non_object(self):
        for text in ("[1, 2]", "42", '"s"', "null"):
            self.assertRejected(text, "not_object")

    def test_fevent_rejects_missing_or_null_timestamp(self):
        self.assertRejected(json.dumps({"user_id": self.uid, "product_id": "p", "action": "x"}), "missing_timestamp")
        self.assertRejected(json.dumps({"user_id": self.uid, "product_id": "p", "ts": None}), "missing_timestamp")

    def test_fevent_rejects_non_numeric_timestamp(self):
        for ts in ("1700000000", True, [1], {"s": 1}):
            self.assertRejected(json.dumps({"user_id": self.uid, "product_id": "p", "ts": ts}), "bad_timestamp")

    def test_fevent_rejects_event_beyond_max_event_skew(self):
        self.assertRejected(self.click(self.now_s() + 600), "future")
        self.assertEqual(self.cmd("EXISTS", "user:" + self.uid), 0)

    def test_fevent_rejects_event_when_no_view_has_its_key(self):
        self.assertRejected(self.click(self.now_s(), user=False, product=None), "missing_key")

    def test_fevent_rejection_reason_is_the_first_views(self):
        # activity (first view of `clicks`) sees a bad key; popularity a missing one.
        self.assertRejected(self.click(self.now_s(), user=1.5, product=None), "bad_key")
        self.assertRejected(self.click(self.now_s(), user=True, product=None), "bad_key")
        # activity: buy needs amount -> missing_field; shopping: basket needs product_id.
        self.assertRejected(self.click(self.now_s(), "buy", product=None), "missing_field")
        self.assertRejected(self.click(self.now_s(), "buy", product=None, amount="12"), "bad_field")

    def test_fevent_rejects_non_scalar_value_for_last(self):
        # product_id as a list: activity.recent and shopping.basket need a
        # scalar (bad_field), popularity needs a string/int key (bad_key).
        self.assertRejected(self.click(self.now_s(), product=["p1"]), "bad_field")

    def test_fevent_unknown_source_is_an_error(self):
        self.assertEqual(self.fevent("nowhere", "{}"), "ERR unknown source 'nowhere'")

    def test_view_missing_its_key_skips_while_another_view_applies(self):
        t = self.now_s() - 5
        prod = "prod-" + self.uid
        self.assertEqual(self.fevent("clicks", self.click(t, user=False, product=prod)), 1)
        self.assertEqual(self.cmd("FGET", "product:" + prod, "views_5m"), [1])

    def test_view_skips_event_missing_a_field_its_matching_aggregation_needs(self):
        t = self.now_s() - 5
        key = "user:" + self.uid
        self.assertEqual(self.fevent("clicks", self.click(t, "click")), 1)
        # buy without amount: activity skips it whole, shopping applies it.
        self.assertEqual(self.fevent("clicks", self.click(t + 1, "buy", product="p9")), 1)
        self.assertEqual(self.cmd("FGET", key, "activity.last_action", "recent", "shopping.clicks_1m", "basket"),
                         ["click", ["p1"], 1, "p9"])

    def test_aggregation_whose_where_does_not_match_needs_no_field(self):
        t = self.now_s() - 5
        self.assertEqual(self.fevent("clicks", self.click(t, "view")), 1)  # no amount, spent's where is false
        self.assertEqual(self.cmd("FGET", "user:" + self.uid, "spent_1h", "last_action"), ["0", "view"])

    def test_too_old_event_is_accepted_but_not_counted_in_windows(self):
        # 10 min old: too old for shopping.clicks (largest window 1m), not for
        # activity.spent (1h); shopping.basket (last) has no window.
        t = self.now_s() - 600
        key = "user:" + self.uid
        self.assertEqual(self.fevent("clicks", self.click(t, "buy", amount=5)), 1)
        self.assertEqual(self.cmd("FGET", key, "shopping.clicks_1m", "spent_1h", "basket"), [0, "5", "p1"])
        self.assertEqual(self.cmd("FWINDOW", key, "shopping.clicks", "1m", "AT", t * 1000 + 1000), 0)
        self.assertEqual(self.cmd("FWINDOW", key, "spent", "1h", "AT", t * 1000 + 1000), "5")

    def test_event_inside_largest_window_is_counted_event_just_outside_is_not(self):
        now = self.now_s()
        key = "user:" + self.uid
        self.assertEqual(self.fevent("clicks", self.click(now - 3600 + 30), self.click(now - 3600 - 30)), 2)
        self.assertEqual(self.cmd("FGET", key, "clicks_1h"), [1])

    def test_event_ahead_of_clock_within_skew_counts_once_its_time_comes(self):
        t = self.now_s() + 120
        key = "user:" + self.uid
        self.assertEqual(self.fevent("clicks", self.click(t)), 1)
        self.assertEqual(self.cmd("FGET", key, "clicks_5m"), [0])
        self.assertEqual(self.cmd("FGET", key, "clicks_5m", "AT", t * 1000), [1])

    # -- timestamps -----------------------------------------------------------------

    def test_timestamp_unit_seconds_integer_and_fraction(self):
        base = self.now_s() - 30
        k1, k2 = self.uid + "a", self.uid + "b"
        self.assertEqual(self.fevent("clicks", self.click(base, user=k1), self.click(base + 0.25, user=k2)), 2)
        self.assertEqual(self.cmd("FGET", "user:" + k1, "last_action", "AT", base * 1000), ["click"])
        self.assertEqual(self.cmd("FGET", "user:" + k1, "last_action", "AT", base * 1000 - 1), [None])
        self.assertEqual(self.cmd("FGET", "user:" + k2, "last_action", "AT", base * 1000 + 250), ["click"])
        self.assertEqual(self.cmd("FGET", "user:" + k2, "last_action", "AT", base * 1000 + 249), [None])

    def test_timestamp_unit_microseconds(self):
        ms = now_ms() - 10000
        ev = json.dumps({"user_id": self.uid, "t": ms * 1000 + 999, "tier": "gold"})
        self.assertEqual(self.fevent("pushes", ev), 1)
        self.assertEqual(self.cmd("FGET", "user:" + self.uid, "tier", "AT", ms), ["gold"])
        self.assertEqual(self.cmd("FGET", "user:" + self.uid, "tier", "AT", ms - 1), [None])

    def test_source_without_timestamp_uses_arrival_time(self):
        before = now_ms()
        self.assertEqual(self.fevent("arrivals", json.dumps({"user_id": self.uid, "ts": 5})), 1)
        after = now_ms()
        key = "user:" + self.uid
        self.assertEqual(self.cmd("FGET", key, "hits_1m"), [1])
        self.assertEqual(self.cmd("FGET", key, "hits_1m", "AT", (before // 1000) * 1000 - 1), [0])
        self.assertEqual(self.cmd("FGET", key, "hits_1m", "AT", after + 1000), [1])

    # -- window rule ------------------------------------------------------------------

    def test_window_covers_tiles_starting_in_half_open_interval(self):
        t = self.now_s() - 600
        s = t * 1000  # unit s: the tile (1 s resolution) starts at the event time
        key = "user:" + self.uid
        self.assertEqual(self.fevent("clicks", self.click(t)), 1)
        at = lambda T, f="activity.clicks_1m": self.cmd("FGET", key, f, "AT", T)[0]  # noqa: E731
        self.assertEqual([at(s - 1), at(s), at(s + 59999), at(s + 60000)], [0, 1, 1, 0])
        self.assertEqual([at(s + 299999, "clicks_5m"), at(s + 300000, "clicks_5m")], [1, 0])

    def test_fwindow_arbitrary_window_follows_the_tile_rule(self):
        t = self.now_s() - 600
        s = t * 1000
        key = "user:" + self.uid
        self.assertEqual(self.fevent("clicks", self.click(t), self.click(t + 1)), 2)
        fw = lambda w, T: self.cmd("FWINDOW", key, "activity.clicks", w, "AT", T)  # noqa: E731
        self.assertEqual([fw("1500ms", s + 1499), fw("1500ms", s + 1500), fw("1500ms", s + 2499)], [2, 1, 1])
        self.assertEqual([fw("1500ms", s + 2500), fw("37s", s + 1000), fw("1ms", s)], [0, 2, 1])

    def test_fwindow_buckets_are_epoch_aligned_oldest_first_with_empty_buckets(self):
        base = (self.now_s() - 1800) // 60 * 60  # a minute boundary, 30 min ago
        key = "user:" + self.uid
        self.assertEqual(self.fevent("clicks", self.click(base + 5), self.click(base + 70), self.click(base + 75),
                                     self.click(base + 200)), 4)
        T = (base + 230) * 1000
        got = self.cmd("FWINDOW", key, "activity.clicks", "5m", "AT", T, "BUCKETS", "1m")
        # covered tiles: starts in (T-5m, T] = [base-69s, base+230s]
        b = base * 1000
        self.assertEqual(got, [[b - 120000, 0], [b - 60000, 0], [b, 1], [b + 60000, 2], [b + 120000, 0],
                               [b + 180000, 1]])

    def test_fwindow_bucket_values_cover_only_tiles_inside_the_window(self):
        base = (self.now_s() - 1800) // 60 * 60
        key = "user:" + self.uid
        self.assertEqual(self.fevent("clicks", self.click(base + 10), self.click(base + 50)), 2)
        got = self.cmd("FWINDOW", key, "activity.clicks", "30s", "AT", (base + 60) * 1000, "BUCKETS", "1m")
        self.assertEqual(got, [[base * 1000, 1], [(base + 60) * 1000, 0]])

    def test_fwindow_buckets_for_window_without_tile_start_do_not_depend_on_bucket_size(self):
        # popularity.views has 5 s tiles; (T - 2s, T] holds no tile start, so
        # no tile is covered: the answer is the one bucket holding T (which the
        # window overlaps), empty, whatever the bucket size.
        prod = "prod-" + self.uid
        t = self.now_s() - 60
        self.assertEqual(self.fevent("clicks", self.click(t, "view", user=False, product=prod)), 1)
        T = (t * 1000) // 20000 * 20000 + 3000
        got = {b: self.cmd("FWINDOW", "product:" + prod, "views", "2s", "AT", T, "BUCKETS", b)
               for b in ("5s", "10s", "20s")}
        start = T // 20000 * 20000  # T's bucket start for 5 s, 10 s and 20 s alike (T = k*20s + 3s)
        self.assertEqual(got, {"5s": [[start, 0]], "10s": [[start, 0]], "20s": [[start, 0]]})

    def test_fwindow_window_larger_than_largest_defined_is_an_error(self):
        self.assertEqual(self.fevent("clicks", self.click(self.now_s())), 1)
        reply = self.cmd("FWINDOW", "user:" + self.uid, "activity.clicks", "2h")
        self.assertTrue(reply.startswith("ERR ") and "is larger than" in reply, reply)

    def test_fwindow_buckets_must_be_a_multiple_of_the_resolution(self):
        reply = self.cmd("FWINDOW", "product:" + self.uid, "daily", "1d", "BUCKETS", "90s")
        self.assertTrue(reply.startswith("ERR ") and "multiple of the resolution" in reply, reply)

    def test_fwindow_bad_duration_is_an_error(self):
        reply = self.cmd("FWINDOW", "user:" + self.uid, "spent", "5 minutes")
        self.assertTrue(reply.startswith("ERR bad duration"), reply)

    def test_fwindow_needs_a_windowed_aggregation(self):
        reply = self.cmd("FWINDOW", "user:" + self.uid, "last_action", "1m")
        self.assertTrue(reply.startswith("ERR ") and "last_action" in reply, reply)

    def test_fwindow_unknown_entity_key_is_nil(self):
        self.assertIsNone(self.cmd("FWINDOW", "user:never-" + self.uid, "spent", "1h"))

    def test_fwindow_sum_and_count_over_empty_window_are_zero(self):
        t = self.now_s() - 1200
        key = "user:" + self.uid
        self.assertEqual(self.fevent("clicks", self.click(t, "buy", amount=3)), 1)
        self.assertEqual(self.cmd("FWINDOW", key, "spent", "1m"), "0")
        self.assertEqual(self.cmd("FWINDOW", key, "activity.clicks", "1m"), 0)
        self.assertEqual(self.cmd("FWINDOW", key, "spent", "30m"), "3")

    # -- FGET / FMGET --------------------------------------------------------------

    def test_fget_returns_named_features_in_order(self):
        t = self.now_s() - 20
        self.assertEqual(self.fevent("clicks", self.click(t, "buy", amount=12.5, product="p2"), self.click(t + 1)), 2)
        self.assertEqual(self.cmd("FGET", "user:" + self.uid, "last_action", "spent_1h", "clicks_5m", "recent"),
                         ["click", "12.5", 1, ["p1", "p2"]])

    def test_fget_without_names_returns_every_feature_name_value_pair(self):
        t = self.now_s() - 20
        self.assertEqual(self.fevent("clicks", self.click(t, "buy", amount=2, product="p2")), 1)
        flat = self.cmd("FGET", "user:" + self.uid)
        self.assertEqual(len(flat), 2 * len(USER_FEATURES))
        # clicks_1m is defined by two views: its naming is checked elsewhere.
        pairs = [(n, v) for n, v in zip(flat[0::2], flat[1::2]) if not n.endswith("clicks_1m")]
        self.assertEqual(pairs, [("clicks_5m", 0), ("clicks_1h", 0), ("spent_1h", "2"), ("last_action", "buy"),
                                 ("recent", ["p2"]), ("basket", "p2"), ("tier", None), ("seen_1m", 0),
                                 ("hits_1m", 0)])

    def test_fget_without_names_gives_distinct_names_to_features_two_views_share(self):
        # activity.clicks_1m and shopping.clicks_1m: a map with the same key
        # twice loses one of them in every client (docs/commands.md: FGET without
        # names answers a map).
        self.assertEqual(self.fevent("clicks", self.click(self.now_s() - 5, "buy", amount=1)), 1)
        names = self.cmd("FGET", "user:" + self.uid)[0::2]
        self.assertEqual(len(names), len(set(names)), "duplicate names in the FGET map: %r" % names)

    def test_fget_unknown_entity_key_is_nil_for_every_feature(self):
        self.assertEqual(self.cmd("FGET", "user:never-" + self.uid, "clicks_5m", "last_action", "recent", "spent_1h"),
                         [None, None, None, None])

    def test_fget_without_names_on_unknown_entity_key_is_empty(self):
        self.assertEqual(self.cmd("FGET", "user:never-" + self.uid), [])

    def test_fget_unknown_feature_is_an_error_naming_it(self):
        self.assertEqual(self.cmd("FGET", "user:" + self.uid, "clicks_2m"),
                         "ERR unknown feature 'clicks_2m' for entity 'user'")
        self.assertEqual(self.cmd("FGET", "robot:" + self.uid, "clicks_5m"),
                         "ERR unknown feature 'clicks_5m' for entity 'robot'")

    def test_feature_name_keeps_window_text_as_written(self):
        self.assertTrue(self.cmd("FGET", "user:" + self.uid, "clicks_60m").startswith("ERR unknown feature"))
        self.assertEqual(self.cmd("FGET", "user:never-" + self.uid, "clicks_1h"), [None])

    def test_ambiguous_bare_name_is_an_error_listing_both_views(self):
        reply = self.cmd("FGET", "user:" + self.uid, "clicks_1m")
        self.assertTrue(reply.startswith("ERR ambiguous feature"), reply)
        self.assertIn("activity.clicks_1m", reply)
        self.assertIn("shopping.clicks_1m", reply)

    def test_fwindow_ambiguous_aggregation_is_an_error_listing_both_views(self):
        reply = self.cmd("FWINDOW", "user:" + self.uid, "clicks", "1m")
        self.assertTrue(reply.startswith("ERR ambiguous"), reply)
        self.assertIn("activity.clicks", reply)
        self.assertIn("shopping.clicks", reply)

    def test_qualified_names_pick_the_view(self):
        t = self.now_s() - 5
        self.assertEqual(self.fevent("clicks", self.click(t, "click"), self.click(t, "buy", amount=1),
                                     self.click(t, "buy", amount=1)), 3)
        key = "user:" + self.uid
        self.assertEqual(self.cmd("FGET", key, "activity.clicks_1m", "shopping.clicks_1m"), [1, 2])
        self.assertEqual(self.cmd("FWINDOW", key, "shopping.clicks", "1m"), 2)

    def test_entity_with_no_state_in_a_view_gets_empty_values(self):
        ev = json.dumps({"user_id": self.uid, "t": (now_ms() - 1000) * 1000, "tier": "gold"})
        self.assertEqual(self.fevent("pushes", ev), 1)
        self.assertEqual(self.cmd("FGET", "user:" + self.uid, "clicks_5m", "spent_1h", "last_action", "recent", "tier"),
                         [0, "0", None, [], "gold"])

    def test_fmget_one_array_per_key_across_shards(self):
        t = self.now_s() - 5
        users = ["%s-%d" % (self.uid, i) for i in range(12)]
        evs = [self.click(t, "buy", user=u, amount=i + 1, product="p%d" % i) for i, u in enumerate(users)]
        self.assertEqual(self.fevent("clicks", *evs), 12)
        keys = ["user:" + u for u in users] + ["user:never-" + self.uid]
        got = self.cmd("FMGET", *keys, "FEATURES", "spent_1h", "basket", "clicks_5m")
        exp = [[str(i + 1), "p%d" % i, 0] for i in range(12)] + [[None, None, None]]
        self.assertEqual(got, exp)

    def test_fmget_at_answers_as_of_that_time(self):
        t = self.now_s() - 100
        users = ["%s-%d" % (self.uid, i) for i in range(6)]
        evs = [self.click(t + i, user=u) for i, u in enumerate(users)]
        self.assertEqual(self.fevent("clicks", *evs), 6)
        got = self.cmd("FMGET", *["user:" + u for u in users], "FEATURES", "clicks_1h", "last_action",
                       "AT", (t + 3) * 1000)
        self.assertEqual(got, [[1, "click"]] * 4 + [[0, None]] * 2)

    def test_fmget_without_features_is_a_syntax_error(self):
        reply = self.cmd("FMGET", "user:a", "user:b", "clicks_5m")
        self.assertTrue(reply.startswith("ERR syntax error"), reply)

    def test_fmget_unknown_feature_is_an_error(self):
        self.assertEqual(self.cmd("FMGET", "user:a", "FEATURES", "nope"), "ERR unknown feature 'nope' for entity 'user'")

    def test_fget_on_plain_string_key_is_wrongtype(self):
        self.r.set("user:" + self.uid, "x")
        self.assertTrue(self.cmd("FGET", "user:" + self.uid, "clicks_5m").startswith("WRONGTYPE"))

    # -- last / last_n ----------------------------------------------------------

    def test_last_n_is_newest_first_by_event_time_keeping_duplicates(self):
        t = self.now_s() - 100
        evs = [self.click(t + 5, product="a"), self.click(t + 1, product="b"), self.click(t + 9, product="c"),
               self.click(t + 5, product="a"), self.click(t + 7, product="d"), self.click(t + 2, product="e")]
        self.assertEqual(self.fevent("clicks", *evs), 6)
        self.assertEqual(self.cmd("FGET", "user:" + self.uid, "recent", "basket"), [["c", "d", "a"], "c"])

    def test_last_ties_on_event_time_go_to_the_later_arrival(self):
        t = self.now_s() - 100
        self.assertEqual(self.fevent("clicks", self.click(t, product="first")), 1)
        self.assertEqual(self.fevent("clicks", self.click(t, product="second"), self.click(t - 1, product="old")), 2)
        self.assertEqual(self.cmd("FGET", "user:" + self.uid, "basket", "recent"), ["second", ["second", "first", "old"]])

    def test_last_and_last_n_at_return_only_retained_values_at_or_before_at(self):
        # recent keeps n=3 values, basket (last) keeps 1: AT answers from what
        # is retained (docs/architecture.md, "Tiles and the window rule"), so
        # basket AT a time before its newest value is nil.
        t = self.now_s() - 100
        evs = [self.click(t + i, product="p%d" % i) for i in range(3)]
        self.assertEqual(self.fevent("clicks", *evs), 3)
        key = "user:" + self.uid
        self.assertEqual(self.cmd("FGET", key, "basket", "recent", "AT", (t + 2) * 1000), ["p2", ["p2", "p1", "p0"]])
        self.assertEqual(self.cmd("FGET", key, "recent", "AT", (t + 1) * 1000 + 999), [["p1", "p0"]])
        self.assertEqual(self.cmd("FGET", key, "basket", "recent", "AT", t * 1000 - 1), [None, []])

    def test_last_value_text_forms(self):
        t = self.now_s() - 100
        cases = [("str", "str"), (1.50, "1.5"), (2.0, "2"), (10, "10"), (-0.25, "-0.25"), (True, "true"),
                 (False, "false"), ("quote\"d", "quote\"d")]
        for i, (value, text) in enumerate(cases):
            user = "%s-%d" % (self.uid, i)
            self.assertEqual(self.fevent("clicks", self.click(t, value, user=user)), 1)
            self.assertEqual(self.cmd("FGET", "user:" + user, "last_action"), [text], "value %r" % (value,))

    def test_last_without_at_is_the_newest_accepted_value_even_ahead_of_the_clock(self):
        # The event 2 min ahead is accepted (within max-event-skew). Without AT
        # last/last_n answer the newest accepted values; with AT only values
        # with ts <= AT from what is retained (last keeps one value).
        t = self.now_s()
        self.assertEqual(self.fevent("clicks", self.click(t - 10, "click", product="p1")), 1)
        self.assertEqual(self.fevent("clicks", self.click(t + 120, "view", product="p2")), 1)
        self.assertEqual(self.cmd("FGET", "user:" + self.uid, "last_action", "basket", "recent"),
                         ["view", "p2", ["p2", "p1"]])
        self.assertEqual(self.cmd("FGET", "user:" + self.uid, "last_action", "recent", "AT", t * 1000),
                         [None, ["p1"]])

    # -- FSET ------------------------------------------------------------------------

    def test_fset_sets_last_and_last_n_features(self):
        key = "user:" + self.uid
        self.assertEqual(self.cmd("FSET", key, "last_action", "pushed", "recent", "x1"), "OK")
        self.assertEqual(self.cmd("FSET", key, "recent", "x2", "tier", "silver"), "OK")
        self.assertEqual(self.cmd("FGET", key, "last_action", "recent", "tier"), ["pushed", ["x2", "x1"], "silver"])

    def test_fset_ts_sets_event_time(self):
        key = "user:" + self.uid
        ts = now_ms() - 60000
        self.assertEqual(self.cmd("FSET", key, "tier", "gold", "TS", ts), "OK")
        self.assertEqual(self.cmd("FGET", key, "tier", "AT", ts - 1), [None])
        self.assertEqual(self.cmd("FGET", key, "tier", "AT", ts), ["gold"])

    def test_fset_refuses_windowed_features(self):
        self.assertEqual(self.cmd("FSET", "user:" + self.uid, "spent_1h", "5"),
                         "ERR FSET sets only last and last_n features; 'spent_1h' is a sum aggregate")
        self.assertEqual(self.cmd("EXISTS", "user:" + self.uid), 0)

    def test_fset_refuses_ts_beyond_max_event_skew(self):
        reply = self.cmd("FSET", "user:" + self.uid, "tier", "gold", "TS", now_ms() + 3600000)
        self.assertTrue(reply.startswith("ERR "), reply)

    def test_fset_refreshes_the_view_ttl(self):
        key = "user:" + self.uid
        ev = json.dumps({"user_id": self.uid, "t": (now_ms() - 50 * 60000) * 1000, "tier": "a"})
        self.assertEqual(self.fevent("pushes", ev), 1)
        self.assertLessEqual(self.r.pttl(key), 10 * 60000)
        self.assertEqual(self.cmd("FSET", key, "tier", "b"), "OK")
        self.assertGreater(self.r.pttl(key), 59 * 60000)

    def test_fset_on_plain_string_key_is_wrongtype(self):
        self.r.set("user:" + self.uid, "x")
        self.assertTrue(self.cmd("FSET", "user:" + self.uid, "tier", "a").startswith("WRONGTYPE"))

    # -- entity keys in the keyspace ----------------------------------------------

    def test_entity_key_type_is_feature(self):
        self.assertEqual(self.fevent("clicks", self.click(self.now_s())), 1)
        self.assertEqual(self.r.type("user:" + self.uid), "feature")

    def test_exists_and_del_on_entity_keys(self):
        key = "user:" + self.uid
        self.assertEqual(self.fevent("clicks", self.click(self.now_s())), 1)
        self.assertEqual(self.r.exists(key), 1)
        self.assertEqual(self.r.delete(key), 1)
        self.assertEqual(self.r.exists(key), 0)
        self.assertEqual(self.cmd("FGET", key, "clicks_5m"), [None])

    def test_scan_type_feature_lists_entity_keys_only(self):
        t = self.now_s()
        users = ["%s-%d" % (self.uid, i) for i in range(20)]
        self.assertEqual(self.fevent("clicks", *[self.click(t, user=u) for u in users]), 20)
        self.r.set("user:%s-plain" % self.uid, "v")
        found, cursor = set(), 0
        for _ in range(10000):
            cursor, keys = self.r.scan(cursor, match="user:%s-*" % self.uid, count=50, _type="feature")
            found.update(keys)
            if cursor == 0:
                break
        self.assertEqual(found, {"user:" + u for u in users})

    def test_ttl_of_entity_key_is_latest_among_its_views(self):
        t = self.now_s()
        self.assertEqual(self.fevent("clicks", self.click(t)), 1)  # activity 1h, shopping 2h
        ttl = self.r.ttl("user:" + self.uid)
        self.assertTrue(7190 <= ttl <= 7200, ttl)

    def test_ttl_runs_from_newest_event_time(self):
        ms = now_ms() - 20 * 60000
        self.assertEqual(self.fevent("pushes", json.dumps({"user_id": self.uid, "t": ms * 1000, "tier": "a"})), 1)
        pttl = self.r.pttl("user:" + self.uid)
        self.assertTrue(39 * 60000 < pttl <= 40 * 60000, pttl)

    def test_expire_and_persist_on_entity_keys(self):
        key = "user:" + self.uid
        self.assertEqual(self.fevent("clicks", self.click(self.now_s())), 1)
        self.assertTrue(self.r.persist(key))
        self.assertEqual(self.r.ttl(key), -1)
        self.assertTrue(self.r.pexpire(key, 300))
        wait_until(lambda: self.r.exists(key) == 0, timeout=5, what="entity key gone after PEXPIRE 300")

    def test_entity_without_ttl_view_has_no_key_ttl(self):
        prod = "prod-" + self.uid
        self.assertEqual(self.fevent("clicks", self.click(self.now_s(), user=False, product=prod)), 1)
        self.assertEqual(self.r.ttl("product:" + prod), -1)

    # -- registry introspection ----------------------------------------------------

    def test_finfo_reports_default_resolution(self):
        info = self.cmd("FINFO", "popularity")
        aggs = dict(zip(info[0::2], info[1::2]))["aggregations"]
        res = {}
        for a in aggs:
            d = dict(zip(a[0::2], a[1::2]))
            res[d["name"]] = d["resolution_ms"]
        self.assertEqual(res, {"views": 5000, "daily": 120000})

    def test_fviews_lists_every_view(self):
        views = self.cmd("FVIEWS")
        names = [dict(zip(v[0::2], v[1::2]))["name"] for v in views]
        self.assertEqual(names, ["activity", "shopping", "popularity", "pushed", "arrived"])

    # -- protocol shapes -------------------------------------------------------------

    def _seed_shape_entity(self):
        t = self.now_s() - 5
        self.assertEqual(self.fevent("clicks", self.click(t, "buy", amount=12.5, product="p1")), 1)
        return "user:" + self.uid

    def test_resp2_shapes_double_as_bulk_nil_as_null_bulk(self):
        key = self._seed_shape_entity()
        with RawClient(self.server.port) as c:
            self.assertEqual(c.raw_command("FGET", key, "spent_1h", "basket", "clicks_5m", "tier"),
                             b"*4\r\n$4\r\n12.5\r\n$2\r\np1\r\n:0\r\n$-1\r\n")
            self.assertEqual(c.raw_command("FGET", "user:never-" + self.uid), b"*0\r\n")
            flat = c.raw_command("FGET", key)
            self.assertTrue(flat.startswith(b"*22\r\n"), flat[:20])

    def test_resp3_fget_without_names_is_a_map(self):
        key = self._seed_shape_entity()
        with RawClient(self.server.port) as c:
            self.assertIsInstance(c.command("HELLO", "3"), RespMap)
            raw = c.raw_command("FGET", key)
            self.assertTrue(raw.startswith(b"%11\r\n"), raw[:20])
            self.assertIn(b"$8\r\nspent_1h\r\n,12.5\r\n", raw)
            self.assertIn(b"$4\r\ntier\r\n_\r\n", raw)
            self.assertEqual(c.raw_command("FGET", "user:never-" + self.uid), b"%0\r\n")

    def test_resp3_doubles_and_nulls_in_fget_and_fmget(self):
        key = self._seed_shape_entity()
        with RawClient(self.server.port) as c:
            c.command("HELLO", "3")
            self.assertEqual(c.raw_command("FGET", key, "spent_1h", "basket", "clicks_5m", "tier"),
                             b"*4\r\n,12.5\r\n$2\r\np1\r\n:0\r\n_\r\n")
            self.assertEqual(c.raw_command("FMGET", key, "user:never-" + self.uid, "FEATURES", "spent_1h", "tier"),
                             b"*2\r\n*2\r\n,12.5\r\n_\r\n*2\r\n_\r\n_\r\n")

    def test_resp3_fwindow_buckets_are_integer_double_pairs(self):
        base = (self.now_s() - 600) // 60 * 60
        self.assertEqual(self.fevent("clicks", self.click(base + 1, "buy", amount=2, product="p1")), 1)
        with RawClient(self.server.port) as c:
            c.command("HELLO", "3")
            raw = c.raw_command("FWINDOW", "user:" + self.uid, "spent", "2m", "AT", (base + 60) * 1000 - 1,
                                "BUCKETS", "1m")
            b = base * 1000
            self.assertEqual(raw, b"*2\r\n*2\r\n:%d\r\n,0\r\n*2\r\n:%d\r\n,2\r\n" % (b - 60000, b))


    # -- pipelines: FEVENTs planned ahead while earlier ones run --------------

    def _ingest_counters(self):
        info = self.r.info("ingest")
        return {k: int(info.get(k, 0)) for k in ("events_applied", "events_rejected", "events_too_old",
                                                  "events_future", "view_skipped_activity_missing_field")}

    def test_pipelined_fevents_count_exactly_once_whatever_lies_between(self):
        """One write of 300 commands: FEVENTs the server plans ahead of the
        one running (docs/architecture.md, "Planning a pipeline ahead"),
        byte-identical ones, rejected ones, ones a view skips or finds too
        old, lowercase ones, reads, a transaction and an arrival-time source
        in between. Every reply and every counter is exact."""
        T = self.now_s()
        good = self.click(T)
        cases = [
            (good, 1, {"events_applied": 1}),
            ("{bad", "ERR 1 of 1 events rejected: #1: invalid_json", {"events_rejected": 1}),
            # a buy without its amount: `activity` skips it, the other views apply it
            (self.click(T, "buy"), 1, {"events_applied": 1, "view_skipped_activity_missing_field": 1}),
            # windows of at most 1d: clicks_1h, views_5m and daily's tiles are too old; the last values apply
            (self.click(T - 3 * 86400), 1, {"events_applied": 1, "events_too_old": 3}),
            (self.click(T + 7200), "ERR 1 of 1 events rejected: #1: future", {"events_rejected": 1, "events_future": 1}),
        ]
        before = self._ingest_counters()
        want = dict.fromkeys(before, 0)
        cmds, expect = [], []
        clicks = 0
        for i in range(300):
            if i % 37 == 36:
                cmds.append(("FGET", "user:" + self.uid, "clicks_1h"))
                expect.append([clicks])
                continue
            if i == 150:
                # the queued FEVENTs run in EXEC, which the server plans
                # ahead from: the two buys after it must not stand in for them
                buy = self.click(T, "buy", amount=1)
                cmds += [("MULTI",), ("FEVENT", "clicks", good), ("fevent", "clicks", good), ("EXEC",),
                         ("FEVENT", "clicks", buy), ("FEVENT", "clicks", buy)]
                expect += ["OK", "QUEUED", "QUEUED", [1, 1], 1, 1]
                clicks += 2
                want["events_applied"] += 4
                continue
            if i % 50 == 7:
                cmds.append(("FEVENT", "arrivals", json.dumps({"user_id": self.uid})))
                expect.append(1)
                want["events_applied"] += 1
                continue
            event, reply, counts = cases[i % len(cases)]
            cmds.append(("fevent" if i % 4 == 1 else "FEVENT", "clicks", event))
            expect.append(reply)
            for k, n in counts.items():
                want[k] += n
            if event == good:
                clicks += 1
        arrivals = sum(1 for c in cmds if c[1:2] == ("arrivals",))
        with RawClient(self.server.port) as c:
            c.send(b"".join(encode_command(*cmd) for cmd in cmds))
            got = c.read_replies(len(cmds), timeout=30)
        got = [g.message if isinstance(g, RespError) else g for g in got]
        self.assertEqual(got, expect)
        after = self._ingest_counters()
        self.assertEqual({k: after[k] - before[k] for k in after}, want)
        self.assertEqual(self.r.execute_command("FGET", "user:" + self.uid, "clicks_1h", "hits_1m"),
                         [clicks, arrivals])


class SingleShardSemanticsTest(FeatureSemanticsTests, unittest.TestCase):
    SHARDS = 1


class ShardedSemanticsTest(FeatureSemanticsTests, unittest.TestCase):
    SHARDS = 4


# ===========================================================================
# Registry validation and reload

GOOD_REGISTRY = """\
sources:
  ev:
    topic: ev
    format: json
    timestamp: {field: ts, unit: ms}
entities:
  user: {key: uid}
views:
  act:
    entity: user
    source: ev
    ttl: 1h
    features:
      kept: {agg: count, windows: [1m, 5m]}
      changed: {agg: sum, field: x, windows: [5m]}
      dropped: {agg: count, windows: [5m]}
      tag: {agg: last, field: tag}
"""

# Each bad file: the marked line is the one the error must name.
BAD_REGISTRIES = {
    "unknown_top_level_key": (GOOD_REGISTRY + "extras: {a: 1}   # <-- here\n", "unknown key 'extras'"),
    "unknown_key_in_feature": (GOOD_REGISTRY.replace(
        "      tag: {agg: last, field: tag}",
        "      tag: {agg: last, field: tag,\n            colour: red}   # <-- here"), "unknown key 'colour'"),
    "bad_duration": (GOOD_REGISTRY.replace("    ttl: 1h", "    ttl: 7 days   # <-- here"), "bad duration"),
    "unknown_aggregation": (GOOD_REGISTRY.replace(
        "      tag: {agg: last, field: tag}",
        "      tag:\n        agg: median   # <-- here\n        field: tag"), "unknown aggregation 'median'"),
    "bad_where": (GOOD_REGISTRY.replace(
        "      kept: {agg: count, windows: [1m, 5m]}",
        "      kept: {agg: count, windows: [1m, 5m],\n             where: \"tag == 'a' and\"}   # <-- here"),
        "bad where"),
    "undefined_entity": (GOOD_REGISTRY.replace("    entity: user", "    entity: shop   # <-- here"),
                         "undefined entity 'shop'"),
    "undefined_source": (GOOD_REGISTRY.replace("    source: ev", "    source: nowhere   # <-- here"),
                         "undefined source 'nowhere'"),
    "window_not_multiple_of_resolution": (GOOD_REGISTRY.replace(
        "      kept: {agg: count, windows: [1m, 5m]}",
        "      kept: {agg: count, resolution: 7s, windows: [1m, 5m]}   # <-- here"),
        "not a multiple of the resolution"),
    "window_not_multiple_of_default_resolution": (GOOD_REGISTRY.replace(
        "      dropped: {agg: count, windows: [5m]}",
        "      dropped: {agg: count, windows: [10m, 1005s]}   # <-- here"), "not a multiple of the resolution"),
    "last_n_without_n": (GOOD_REGISTRY.replace(
        "      tag: {agg: last, field: tag}",
        "      tag: {agg: last_n, field: tag}   # <-- here"), "last_n needs 'n'"),
    "yaml_syntax_error": (GOOD_REGISTRY.replace(
        "      kept: {agg: count, windows: [1m, 5m]}",
        "      kept: {agg: count, windows: [1m, 5m}   # <-- here"), ""),
}


def marked_line(text):
    for i, line in enumerate(text.splitlines()):
        if "# <-- here" in line:
            return i + 1
    raise AssertionError("fixture without a marked line")


class RegistryValidationTests(unittest.TestCase):
    """Bad files through FREGISTRY RELOAD: refused with file:line, and the
    old registry keeps serving (same VERSION, same values)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.reg_path = cls.tmp.file("registry.yaml", GOOD_REGISTRY)
        cls.server = start_server(cls.reg_path)
        r = cls.server.redis()
        cls.ts = now_ms() - 10000
        r.execute_command("FEVENT", "ev", json.dumps({"uid": "a", "ts": cls.ts, "x": 2, "tag": "t1"}))
        cls.version = r.execute_command("FREGISTRY", "VERSION")
        r.close()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.tmp.cleanup()

    def setUp(self):
        self.r = self.server.redis()

    def tearDown(self):
        with open(self.reg_path, "w") as f:
            f.write(GOOD_REGISTRY)
        self.r.close()

    def check_refused(self, name):
        text, problem = BAD_REGISTRIES[name]
        with open(self.reg_path, "w") as f:
            f.write(text)
        with self.assertRaises(redis.ResponseError) as cm:
            self.r.execute_command("FREGISTRY", "RELOAD")
        msg = err_text(cm.exception)
        self.assertTrue(msg.startswith("ERR "), msg)
        self.assertIn("%s:%d:" % (self.reg_path, marked_line(text)), msg)
        self.assertIn(problem, msg)
        # The old registry keeps serving.
        self.assertEqual(self.r.execute_command("FREGISTRY", "VERSION"), self.version)
        self.assertEqual(self.r.execute_command("FGET", "user:a", "kept_5m", "changed_5m", "dropped_5m", "tag"),
                         [1, "2", 1, "t1"])

    def test_refuses_unknown_top_level_key(self):
        self.check_refused("unknown_top_level_key")

    def test_refuses_unknown_key_in_a_feature(self):
        self.check_refused("unknown_key_in_feature")

    def test_refuses_bad_duration(self):
        self.check_refused("bad_duration")

    def test_refuses_unknown_aggregation(self):
        self.check_refused("unknown_aggregation")

    def test_refuses_where_that_does_not_parse(self):
        self.check_refused("bad_where")

    def test_refuses_view_with_undefined_entity(self):
        self.check_refused("undefined_entity")

    def test_refuses_view_with_undefined_source(self):
        self.check_refused("undefined_source")

    def test_refuses_window_not_multiple_of_explicit_resolution(self):
        self.check_refused("window_not_multiple_of_resolution")

    def test_refuses_window_not_multiple_of_default_resolution(self):
        self.check_refused("window_not_multiple_of_default_resolution")

    def test_refuses_last_n_without_n(self):
        self.check_refused("last_n_without_n")

    def test_refuses_yaml_syntax_error(self):
        self.check_refused("yaml_syntax_error")

    def test_refuses_missing_file(self):
        os.unlink(self.reg_path)
        with self.assertRaises(redis.ResponseError) as cm:
            self.r.execute_command("FREGISTRY", "RELOAD")
        self.assertIn(self.reg_path, err_text(cm.exception))
        self.assertEqual(self.r.execute_command("FREGISTRY", "VERSION"), self.version)

    def test_version_is_stable_across_reloads_of_the_same_file(self):
        self.assertEqual(self.r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertEqual(self.r.execute_command("FREGISTRY", "VERSION"), self.version)
        self.assertEqual(self.r.execute_command("FGET", "user:a", "kept_5m", "tag"), [1, "t1"])


RELOADED_REGISTRY = GOOD_REGISTRY.replace(
    "      changed: {agg: sum, field: x, windows: [5m]}\n      dropped: {agg: count, windows: [5m]}\n",
    "      changed: {agg: sum, field: x, where: \"x > 1\", windows: [5m]}\n"
    "      added: {agg: max, field: x, windows: [5m]}\n")


class RegistryReloadTests(unittest.TestCase):
    """A good file swaps in: unchanged aggregations keep their state, changed
    and new ones start empty, removed ones disappear."""

    def setUp(self):
        self.tmp = TempDir()
        self.reg_path = self.tmp.file("registry.yaml", GOOD_REGISTRY)
        self.server = start_server(self.reg_path)
        self.r = self.server.redis()
        self.ts = now_ms() - 10000
        self.assertEqual(self.r.execute_command("FEVENT", "ev", json.dumps({"uid": "a", "ts": self.ts, "x": 2,
                                                                             "tag": "t1"})), 1)
        self.version = self.r.execute_command("FREGISTRY", "VERSION")

    def tearDown(self):
        try:
            self.r.close()
            self.server.stop()
        finally:
            self.tmp.cleanup()

    def write(self, text):
        with open(self.reg_path, "w") as f:
            f.write(text)

    def assert_reconciled(self):
        self.assertNotEqual(self.r.execute_command("FREGISTRY", "VERSION"), self.version)
        self.assertEqual(self.r.execute_command("FGET", "user:a", "kept_1m", "kept_5m", "changed_5m", "added_5m", "tag"),
                         [1, 1, "0", None, "t1"])
        with self.assertRaises(redis.ResponseError) as cm:
            self.r.execute_command("FGET", "user:a", "dropped_5m")
        self.assertEqual(err_text(cm.exception), "ERR unknown feature 'dropped_5m' for entity 'user'")
        # New events feed the new definitions.
        self.assertEqual(self.r.execute_command("FEVENT", "ev", json.dumps({"uid": "a", "ts": now_ms() - 1000,
                                                                             "x": 3, "tag": "t2"})), 1)
        self.assertEqual(self.r.execute_command("FGET", "user:a", "kept_5m", "changed_5m", "added_5m", "tag"),
                         [2, "3", "3", "t2"])

    def test_version_is_a_hash_string_that_changes_with_the_definitions(self):
        self.assertRegex(self.version, r"^[0-9a-f]{8,}$")
        self.write(RELOADED_REGISTRY)
        self.assertEqual(self.r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertNotEqual(self.r.execute_command("FREGISTRY", "VERSION"), self.version)

    def test_reload_keeps_unchanged_resets_changed_adds_new_drops_removed(self):
        self.write(RELOADED_REGISTRY)
        self.assertEqual(self.r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assert_reconciled()

    def test_sighup_reloads_like_fregistry_reload(self):
        self.write(RELOADED_REGISTRY)
        self.server.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.r.execute_command("FREGISTRY", "VERSION") != self.version, timeout=5,
                   what="a new registry version after SIGHUP")
        self.assert_reconciled()

    def test_sighup_with_bad_file_keeps_old_registry(self):
        self.write(BAD_REGISTRIES["unknown_aggregation"][0])
        self.server.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "registry reload refused" in self.server.log_text(), timeout=5,
                   what="the refusal in the log")
        self.assertIn("%s:%d:" % (self.reg_path, marked_line(BAD_REGISTRIES["unknown_aggregation"][0])),
                      self.server.log_text())
        self.assertEqual(self.r.execute_command("FREGISTRY", "VERSION"), self.version)
        self.assertEqual(self.r.execute_command("FGET", "user:a", "dropped_5m", "tag"), [1, "t1"])

    def test_reload_applies_changed_view_ttl_to_existing_entities(self):
        # user:a's newest event is 10 s old; with the view's ttl cut from 1h
        # to 30s it has about 20 s left, not an hour (docs/architecture.md,
        # "Entity keys and TTL": state goes once no event touched it for the TTL).
        self.write(GOOD_REGISTRY.replace("    ttl: 1h\n", "    ttl: 30s\n"))
        self.assertEqual(self.r.execute_command("FREGISTRY", "RELOAD"), "OK")
        pttl = self.r.pttl("user:a")
        self.assertTrue(-2 <= pttl <= 20000, "PTTL after the ttl became 30s: %d" % pttl)

    def test_reload_removing_the_only_view_of_an_entity_drops_its_keys(self):
        self.write(GOOD_REGISTRY.split("views:")[0] + "views:\n  other:\n    entity: user\n    source: ev\n"
                   "    features:\n      z: {agg: count, windows: [1m]}\n")
        self.assertEqual(self.r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertEqual(self.r.execute_command("EXISTS", "user:a"), 0)
        self.assertEqual(self.r.dbsize(), 0)


class StartupRefusalTests(unittest.TestCase):
    def run_server(self, registry_path):
        tmp = TempDir()
        try:
            log = os.path.join(tmp.path, "server.log")
            proc = subprocess.run([os.path.abspath(SERVER_BINARY), "--port", "0", "--logfile", log,
                                   "--registry", registry_path], cwd=tmp.path, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=15)
            return proc.returncode, proc.stderr.decode("utf-8", "replace")
        finally:
            tmp.cleanup()

    def test_server_refuses_to_start_with_bad_registry(self):
        tmp = TempDir()
        try:
            text = BAD_REGISTRIES["undefined_source"][0]
            path = tmp.file("bad.yaml", text)
            rc, err = self.run_server(path)
            self.assertNotEqual(rc, 0)
            self.assertIn("%s:%d:" % (path, marked_line(text)), err)
            self.assertIn("undefined source 'nowhere'", err)
        finally:
            tmp.cleanup()

    def test_server_refuses_to_start_with_missing_registry(self):
        path = "/nonexistent-fkv-dir/registry.yaml"
        rc, err = self.run_server(path)
        self.assertNotEqual(rc, 0)
        self.assertIn(path, err)


# ===========================================================================
# Expiry

TTL_REGISTRY = """\
sources:
  ev:
    topic: ev
    format: json
    timestamp: {field: ts, unit: ms}
entities:
  user: {key: uid}
views:
  brief:
    entity: user
    source: ev
    ttl: 1s
    features:
      n: {agg: count, windows: [1m]}
      v: {agg: last, field: v}
  longer:
    entity: user
    source: ev
    ttl: 1h
    features:
      m: {agg: count, where: "keep == true", windows: [1m]}
"""

NO_TTL_REGISTRY = """\
sources:
  ev:
    topic: ev
    format: json
    timestamp: {field: ts, unit: ms}
entities:
  user: {key: uid}
views:
  short:
    entity: user
    source: ev
    features:
      n: {agg: count, windows: [2s]}
"""


class ExpiryTests(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.server = None

    def tearDown(self):
        try:
            if self.server is not None:
                self.server.stop()
        finally:
            self.tmp.cleanup()

    def start(self, registry, shards=1):
        self.server = start_server(self.tmp.file("registry.yaml", registry), shards=shards)
        return self.server.redis()

    def test_idle_entity_stops_being_served_after_view_ttl(self):
        r = self.start(TTL_REGISTRY)
        sent = time.monotonic()
        ts = now_ms()
        self.assertEqual(r.execute_command("FEVENT", "ev", json.dumps({"uid": "a", "ts": ts, "v": "x"})), 1)
        self.assertEqual(r.execute_command("FGET", "user:a", "n_1m", "v"), [1, "x"])
        pttl = r.pttl("user:a")
        self.assertTrue(0 < pttl <= 1000, pttl)
        wait_until(lambda: r.execute_command("FGET", "user:a", "n_1m", "v") == [None, None], timeout=5,
                   what="user:a no longer served")
        self.assertGreater(time.monotonic() - sent, 0.5, "expired far too early")
        self.assertEqual(r.execute_command("FGET", "user:a"), [])

    def test_expired_view_is_not_served_while_another_view_keeps_the_key(self):
        r = self.start(TTL_REGISTRY)
        self.assertEqual(r.execute_command("FEVENT", "ev", json.dumps({"uid": "a", "ts": now_ms(), "v": "x",
                                                                        "keep": True})), 1)
        self.assertGreater(r.pttl("user:a"), 3590000)
        wait_until(lambda: r.execute_command("FGET", "user:a", "n_1m", "v") == [0, None], timeout=5,
                   what="the 1 s view's state no longer served")
        self.assertEqual(r.execute_command("FGET", "user:a", "m_1m"), [1])
        self.assertEqual(r.exists("user:a"), 1)

    def test_event_older_than_view_ttl_leaves_no_state(self):
        r = self.start(TTL_REGISTRY)
        self.assertEqual(r.execute_command("FEVENT", "ev", json.dumps({"uid": "a", "ts": now_ms() - 5000, "v": "x"})), 1)
        self.assertEqual(r.execute_command("FGET", "user:a", "n_1m", "v"), [None, None])
        self.assertEqual(r.dbsize(), 0)

    def test_active_sweep_reclaims_expired_entities_without_reads(self):
        r = self.start(TTL_REGISTRY, shards=4)
        base_mem = r.info("memory")["used_memory"]
        ts = now_ms() + 2000  # lives until ts + 1 s: time to measure
        n = 20000
        pipe = r.pipeline(transaction=False)
        for b in range(0, n, 1000):
            pipe.execute_command("FEVENT", "ev", *[json.dumps({"uid": "u%d" % i, "ts": ts, "v": "value-%d" % i})
                                                   for i in range(b, b + 1000)])
        self.assertEqual(pipe.execute(), [1000] * (n // 1000))
        self.assertEqual(r.dbsize(), n)
        full_mem = r.info("memory")["used_memory"]
        grown = full_mem - base_mem
        self.assertGreater(grown, 1 << 20, "20000 entities should take more than 1 MiB (%d -> %d)" % (base_mem, full_mem))
        wait_until(lambda: r.dbsize() == 0, timeout=10, what="DBSIZE 0 through the active sweep")
        wait_until(lambda: r.info("memory")["used_memory"] < full_mem - grown // 2, timeout=5,
                   what="used_memory to fall back (base %d, full %d)" % (base_mem, full_mem))

    def _past_view_ttl(self, ts):
        wait_until(lambda: now_ms() > ts + 1500, timeout=5, what="the 1 s view TTL to pass")

    def test_expire_on_entity_key_decides_when_it_goes(self):
        # Spec §5: EXPIRE works on entity keys as on plain keys; TTL reports
        # the time until the key goes.
        r = self.start(TTL_REGISTRY)
        ts = now_ms()
        self.assertEqual(r.execute_command("FEVENT", "ev", json.dumps({"uid": "a", "ts": ts, "v": "x"})), 1)
        self.assertTrue(r.expire("user:a", 60))
        self._past_view_ttl(ts)
        self.assertGreater(r.pttl("user:a"), 50000)
        self.assertEqual(r.exists("user:a"), 1)
        self.assertEqual(r.execute_command("FGET", "user:a", "n_1m", "v"), [1, "x"])

    def test_persist_on_entity_key_keeps_it(self):
        r = self.start(TTL_REGISTRY)
        ts = now_ms()
        self.assertEqual(r.execute_command("FEVENT", "ev", json.dumps({"uid": "a", "ts": ts, "v": "x"})), 1)
        self.assertTrue(r.persist("user:a"))
        self._past_view_ttl(ts)
        self.assertEqual(r.ttl("user:a"), -1)
        self.assertEqual(r.execute_command("FGET", "user:a", "n_1m", "v"), [1, "x"])

    def test_max_event_skew_directive_sets_the_future_limit(self):
        self.server = start_server(self.tmp.file("registry.yaml", TTL_REGISTRY), extra={"max-event-skew": "10s"})
        r = self.server.redis()
        now = now_ms()
        with self.assertRaises(redis.ResponseError) as cm:
            r.execute_command("FEVENT", "ev", json.dumps({"uid": "a", "ts": now + 60000, "v": "x", "keep": True}))
        self.assertEqual(err_text(cm.exception), "ERR 1 of 1 events rejected: #1: future")
        self.assertEqual(r.execute_command("FEVENT", "ev", json.dumps({"uid": "a", "ts": now + 3000, "v": "x",
                                                                        "keep": True})), 1)

    def test_tiles_past_the_largest_window_are_reclaimed_without_ttl(self):
        # Spec §5/§8: tiles older than the largest window are reclaimed by the
        # active sweep whether or not events arrive; an entity left with no
        # state is gone (no TTL involved, no reads).
        r = self.start(NO_TTL_REGISTRY)
        self.assertEqual(r.execute_command("FEVENT", "ev", json.dumps({"uid": "a", "ts": now_ms()})), 1)
        self.assertEqual(r.dbsize(), 1)
        wait_until(lambda: r.dbsize() == 0, timeout=8, what="the entity whose only tile aged out to be reclaimed")


# ===========================================================================
# Typed sources: `fields:` of a source declares types; an event that
# violates one is rejected whole (bad_type, bad_enum, missing_field).

TYPED_REGISTRY = """\
sources:
  ev:
    topic: ev
    timestamp: {field: ts, unit: ms}
    fields:
      uid: int
      price: float
      action: {enum: [click, view, purchase]}
      note: string
      vip: bool
      region: {type: string, required: true}
entities:
  user: {key: uid}
views:
  act:
    entity: user
    source: ev
    ttl: 1h
    features:
      events: {agg: count, windows: [10m]}
      spent: {agg: sum, field: price, where: "action == 'purchase'", windows: [10m]}
      last_action: {agg: last, field: action}
"""

# The same without types: what a reload from it to TYPED_REGISTRY changes.
UNTYPED_REGISTRY = re.sub(r"    fields:\n(      .*\n)+", "", TYPED_REGISTRY)

# Values of each JSON type; the model's type check below decides.
TYPED_VALUES = [7, -3, 2.5, "7", "click", "view", "purchase", "Click", "", True, False, None, [1], {"a": 1}]


def typed_verdict(ev):
    """The reason featurekv must give for `ev`, or "" (the first failing
    declared field, in declaration order; then the view's own checks)."""
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)
    checks = [("uid", lambda v: is_int(v), False), ("price", lambda v: is_int(v) or isinstance(v, float), False),
              ("action", "enum", False), ("note", lambda v: isinstance(v, str), False),
              ("vip", lambda v: isinstance(v, bool), False), ("region", lambda v: isinstance(v, str), True)]
    for field, ok, required in checks:
        v = ev.get(field)
        if v is None:
            if required:
                return "missing_field"
            continue
        if ok == "enum":
            if not isinstance(v, str):
                return "bad_type"
            if v not in ("click", "view", "purchase"):
                return "bad_enum"
        elif not ok(v):
            return "bad_type"
    if ev.get("uid") is None:
        return "missing_key"
    if ev.get("action") is None:
        return "missing_field"  # last_action needs it
    if ev.get("action") == "purchase" and ev.get("price") is None:
        return "missing_field"  # spent needs it
    return ""


class OwnServerTests:
    """A server per test on REGISTRY, its snapshots in the test's directory
    (restartable with start()), no save rules."""
    SHARDS = 1
    REGISTRY = ""

    def setUp(self):
        self.tmp = TempDir()
        self.reg_path = self.tmp.file("features.yaml", self.REGISTRY)
        self.server = self.start()

    def start(self):
        return ServerProcess(SERVER_BINARY, shards=self.SHARDS, data_dir=self.tmp.path,
                             directives=[("registry", self.reg_path), ("save", "")]).start()

    def tearDown(self):
        try:
            self.server.kill()
        finally:
            self.tmp.cleanup()


class TypedSourceTests(OwnServerTests):
    REGISTRY = TYPED_REGISTRY

    def rejected(self, r):
        info = r.info("ingest")
        return {k[len("rejected_"):]: int(v) for k, v in info.items()
                if k.startswith("rejected_") and not k.startswith("rejected_by")}

    def send(self, r, events):
        try:
            return r.execute_command("FEVENT", "ev", *[json.dumps(e) for e in events]), ""
        except redis.ResponseError as e:
            return None, err_text(e)

    def test_random_events_against_the_model_with_a_restart_in_the_middle(self):
        rnd = random.Random(20261202 + self.SHARDS)
        r = self.server.redis()
        now = now_ms()
        counts, spent, last, reasons = {}, {}, {}, {}
        for batch in range(2):
            for _ in range(400):
                ev = {"ts": now - rnd.randrange(60000), "region": rnd.choice(["eu", "us", None, 1])}
                for f in ("uid", "price", "action", "note", "vip"):
                    if rnd.random() < 0.8:
                        ev[f] = rnd.choice(TYPED_VALUES) if rnd.random() < 0.3 else {
                            "uid": rnd.randrange(20), "price": rnd.choice([1, 2.5, 10]),
                            "action": rnd.choice(["click", "view", "purchase"]), "note": "n",
                            "vip": rnd.random() < 0.5}[f]
                if rnd.random() < 0.2:
                    ev.pop("region")
                want = typed_verdict(ev)
                got, err = self.send(r, [ev])
                if want:
                    self.assertEqual(err, "ERR 1 of 1 events rejected: #1: " + want, ev)
                    reasons[want] = reasons.get(want, 0) + 1
                    continue
                self.assertEqual((got, err), (1, ""), ev)
                u = ev["uid"]
                counts[u] = counts.get(u, 0) + 1
                if ev["action"] == "purchase":
                    spent[u] = spent.get(u, 0) + ev["price"]
                last.setdefault(u, []).append((ev["ts"], ev["action"]))
            if batch == 0:
                # A snapshot and a restart in the middle: the types come back
                # with the registry, the state with the snapshot.
                self.assertTrue(r.save())
                self.server.stop()
                self.server = self.start()
                r = self.server.redis()
                reasons = {}  # INFO counters start again
        self.assertGreater(len(counts), 5)
        self.assertTrue({"bad_type", "bad_enum", "missing_field"} <= set(reasons), reasons)
        got = self.rejected(r)
        for reason, n in reasons.items():
            self.assertEqual(got.get(reason), n, (reason, got))
        for u in sorted(counts):
            events, s, action = r.execute_command("FGET", "user:%d" % u, "events_10m", "spent_10m", "last_action")
            self.assertEqual(int(events), counts[u], u)
            self.assertAlmostEqual(float(s or 0), spent.get(u, 0), places=6)
            newest = max(t for t, _ in last[u])
            actions = {a for t, a in last[u] if t == newest}
            self.assertIn(action, actions, u)  # the newest event's (a tie: one of them)
        # FINGEST ERRORS keeps samples with the new reasons.
        samples = r.execute_command("FINGEST", "ERRORS")
        seen = {dict(zip(x[0::2], x[1::2]))["reason"] for x in samples}
        self.assertTrue(seen & {"bad_type", "bad_enum", "missing_field"}, seen)

    def test_a_reload_that_adds_types_rejects_what_it_accepted(self):
        r = self.server.redis()
        bad = {"ts": now_ms(), "uid": "42", "action": "click", "region": "eu"}  # uid a string
        self.assertEqual(self.send(r, [bad])[1], "ERR 1 of 1 events rejected: #1: bad_type")
        with open(self.reg_path, "w") as f:
            f.write(UNTYPED_REGISTRY)
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertEqual(self.send(r, [bad]), (1, ""))
        with open(self.reg_path, "w") as f:
            f.write(TYPED_REGISTRY.replace("[click, view, purchase]", "[click, view]"))
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        ok = dict(bad, uid=42)
        self.assertEqual(self.send(r, [ok, dict(ok, action="purchase", price=3)])[1],
                         "ERR 1 of 2 events rejected: #2: bad_enum")
        # user:42 has both: uid "42" (accepted untyped) and 42 name the same entity.
        self.assertEqual(r.execute_command("FGET", "user:42", "events_10m"), [2])
        # A bad type declaration is refused with file:line; the old one serves on.
        with open(self.reg_path, "w") as f:
            f.write(TYPED_REGISTRY.replace("      vip: bool", "      vip: boolean"))
        with self.assertRaises(redis.ResponseError) as cm:
            r.execute_command("FREGISTRY", "RELOAD")
        self.assertIn("features.yaml:10: unknown type 'boolean'", str(cm.exception))
        self.assertEqual(self.send(r, [dict(ok, action="purchase", price=3)])[1],
                         "ERR 1 of 1 events rejected: #1: bad_enum")


class SingleShardTypedSourceTest(TypedSourceTests, unittest.TestCase):
    SHARDS = 1


class ShardedTypedSourceTest(TypedSourceTests, unittest.TestCase):
    SHARDS = 4


# ===========================================================================
# Quantiles: sketches against exact values, through restarts and reloads

QUANTILE_REGISTRY = """\
sources:
  req:
    topic: req
    timestamp: {field: ts, unit: ms}
    fields:
      ms: float
entities:
  svc: {key: svc}
views:
  latency:
    entity: svc
    source: req
    features:
      lat: {agg: quantile, field: ms, q: [0.5, 0.95, 0.99], windows: [10m, 1h], resolution: 1m}
      calls: {agg: count, windows: [1h]}
"""


class QuantileTests(OwnServerTests):
    """`agg: quantile` end to end: 3,000 latencies over 50 tiles, out of
    order, against the exact quantiles of the values (within the sketch's
    1%); RESP2 and RESP3; FWINDOW; AT; a snapshot and restart; reloads that
    change the q list (state kept), drop the aggregation and add it back
    (state gone)."""
    REGISTRY = QUANTILE_REGISTRY

    def feed(self, r, rnd, svc, now, n):
        vals = []
        events = []
        for _ in range(n):
            ts = now - rnd.randrange(50 * 60000)
            x = rnd.choice([round(rnd.lognormvariate(3, 1.2), 3), rnd.randint(1, 20), 0, -rnd.random()])
            events.append(json.dumps({"svc": svc, "ts": ts, "ms": x}))
            vals.append((ts, x))
        for i in range(0, len(events), 100):
            self.assertEqual(r.execute_command("FEVENT", "req", *events[i:i + 100]), len(events[i:i + 100]))
        return vals

    def check(self, got, vals, q):
        want = quantile_expect(vals, q)
        m = mismatch(want, got)
        self.assertIsNone(m, "q=%g over %d values: %s" % (q, len(vals), m))

    def window(self, vals, T, w):
        res = 60000
        return [x for ts, x in vals if T - w < ts // res * res <= T]

    def test_quantiles_against_exact_values_through_a_restart_and_reloads(self):
        rnd = random.Random(7 + self.SHARDS)
        r = self.server.redis()
        now = now_ms()
        vals = {svc: self.feed(r, rnd, svc, now, 600) for svc in ("a", "b", "c", "d", "e")}
        feats = ["lat_p50_10m", "lat_p95_10m", "lat_p99_10m", "lat_p50_1h", "lat_p95_1h", "lat_p99_1h"]
        qs = [0.5, 0.95, 0.99] * 2
        ws = [600000] * 3 + [3600000] * 3

        def verify(r, T=None):
            for svc, vs in vals.items():
                args = ["FGET", "svc:" + svc] + feats + (["AT", T] if T else [])
                got = r.execute_command(*args)
                for g, q, w in zip(got, qs, ws):
                    self.check(g, self.window(vs, T or now_ms(), w), q)

        verify(r)
        verify(r, now - 30 * 60000)  # AT: half the events are newer
        # RESP3: a double.
        with RawClient(self.server.port) as c:
            c.command("HELLO", "3")
            raw = c.raw_command("FGET", "svc:a", "lat_p50_1h")
            self.assertTrue(raw.startswith(b"*1\r\n,"), raw)
            self.assertIsNone(c.command("FGET", "svc:none", "lat_p50_1h")[0])
        # FWINDOW names one quantile; buckets of 10m.
        T = now_ms()
        got = r.execute_command("FWINDOW", "svc:b", "lat_p95", "1h", "AT", T, "BUCKETS", "10m")
        self.assertGreaterEqual(len(got), 6)
        for start, value in got:
            bucket = [x for ts, x in vals["b"] if T - 3600000 < ts // 60000 * 60000 <= T and
                      start <= ts // 60000 * 60000 < start + 600000]
            self.check(value, bucket, 0.95)
        with self.assertRaises(redis.ResponseError) as cm:
            r.execute_command("FWINDOW", "svc:b", "lat", "1h")
        self.assertIn("several quantiles", str(cm.exception))
        info = r.execute_command("FINFO", "latency")
        aggs = dict(zip(info[0::2], info[1::2]))["aggregations"]
        lat = dict(zip(aggs[0][0::2], aggs[0][1::2]))
        self.assertEqual([float(q) for q in lat["q"]], [0.5, 0.95, 0.99])
        # A snapshot and a restart: the sketches come back byte for byte.
        before = [r.execute_command("FGET", "svc:" + s, *feats, "AT", T) for s in sorted(vals)]
        self.assertTrue(r.save())
        self.server.stop()
        self.server = self.start()
        r = self.server.redis()
        self.assertEqual([r.execute_command("FGET", "svc:" + s, *feats, "AT", T) for s in sorted(vals)], before)
        verify(r)
        # A reload that changes the q list keeps the sketches: p75 answers at once.
        with open(self.reg_path, "w") as f:
            f.write(QUANTILE_REGISTRY.replace("q: [0.5, 0.95, 0.99]", "q: [0.5, 0.75]"))
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.check(r.execute_command("FGET", "svc:c", "lat_p75_1h")[0], self.window(vals["c"], now_ms(), 3600000), 0.75)
        with self.assertRaises(redis.ResponseError):
            r.execute_command("FGET", "svc:c", "lat_p95_1h")
        # Dropped, then added back: it starts empty (a new definition's state).
        with open(self.reg_path, "w") as f:
            f.write(QUANTILE_REGISTRY.replace(
                "      lat: {agg: quantile, field: ms, q: [0.5, 0.95, 0.99], windows: [10m, 1h], resolution: 1m}\n", ""))
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertEqual(r.execute_command("FGET", "svc:c", "calls_1h"), [600])
        with open(self.reg_path, "w") as f:
            f.write(QUANTILE_REGISTRY)
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertEqual(r.execute_command("FGET", "svc:c", "lat_p50_1h", "calls_1h"), [None, 600])
        # A number is required: a string latency is a bad_type (typed source).
        with self.assertRaises(redis.ResponseError) as cm:
            r.execute_command("FEVENT", "req", json.dumps({"svc": "c", "ts": now_ms(), "ms": "slow"}))
        self.assertIn("bad_type", str(cm.exception))


class SingleShardQuantileTest(QuantileTests, unittest.TestCase):
    SHARDS = 1


class ShardedQuantileTest(QuantileTests, unittest.TestCase):
    SHARDS = 4


# ===========================================================================
# Feature versions: both computed from the same events, a default that moves
# unqualified names, kept in snapshots and across reloads

VERSIONED_REGISTRY = """\
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
    features:
      clicks: {agg: count, where: "kind == 'click'", windows: [10m]}
      last_kind: {agg: last, field: kind}
  act@2:
    entity: user
    source: ev
    features:
      clicks: {agg: count, where: "kind == 'click' or kind == 'tap'", windows: [10m]}
      spend: {agg: sum, field: amt, windows: [1h]}
      notes: {agg: last_n, field: note, n: 40}
"""


class VersionTests(OwnServerTests):
    """Two versions of a view from one source against a model of both; the
    default moved by FREGISTRY DEFAULT; a snapshot and restart keep it; a
    reload that drops version 2 frees its state and falls back to version
    1, one that adds it back starts it empty under the kept default."""
    REGISTRY = VERSIONED_REGISTRY

    def test_versions_side_by_side_and_a_default_that_moves(self):
        rnd = random.Random(5 + self.SHARDS)
        r = self.server.redis()
        now = now_ms()
        v1, v2, spend = defaultdict(int), defaultdict(int), defaultdict(float)
        events = []
        for _ in range(500):
            u = "u%d" % rnd.randrange(12)
            kind = rnd.choice(["click", "tap", "view"])
            amt = rnd.choice([1, 2.5, 4])
            events.append(json.dumps({"uid": u, "ts": now - rnd.randrange(9 * 60000), "kind": kind, "amt": amt,
                                      "note": "note-%030d" % rnd.randrange(10 ** 9)}))
            v1[u] += kind == "click"
            v2[u] += kind in ("click", "tap")
            spend[u] += amt
        for i in range(0, len(events), 50):
            self.assertEqual(r.execute_command("FEVENT", "ev", *events[i:i + 50]), 50)
        users = sorted(v1)

        def check(r, default):
            for u in users:
                k = "user:" + u
                a, b, sp = r.execute_command("FGET", k, "act@1.clicks_10m", "act@2.clicks_10m", "act@2.spend_1h")
                self.assertEqual((a, b, float(sp)), (v1[u], v2[u], spend[u]))
                self.assertEqual(r.execute_command("FGET", k, "clicks_10m", "act.clicks_10m"),
                                 [v1[u] if default == 1 else v2[u]] * 2)

        check(r, 1)
        self.assertEqual(r.execute_command("FREGISTRY", "DEFAULT", "act"), 1)
        self.assertEqual(r.execute_command("FREGISTRY", "DEFAULT", "act", "2"), "OK")
        self.assertEqual(r.execute_command("FREGISTRY", "DEFAULT", "act"), 2)
        check(r, 2)
        # FGET without names lists the default version's features.
        names = r.execute_command("FGET", "user:" + users[0])[0::2]
        self.assertEqual(names, ["clicks_10m", "spend_1h", "notes"])
        with RawClient(self.server.port) as c:
            c.command("HELLO", "3")
            self.assertEqual(c.command("FGET", "user:" + users[0])["clicks_10m"], v2[users[0]])
        # FVIEWS lists every version with its own features.
        views = {d["name"]: d for d in (dict(zip(v[0::2], v[1::2])) for v in r.execute_command("FVIEWS"))}
        self.assertEqual(views["act"]["features"], ["clicks_10m", "last_kind"])
        self.assertEqual(views["act@2"]["features"], ["clicks_10m", "spend_1h", "notes"])
        # FINFO of the bare name describes the default version.
        info = r.execute_command("FINFO", "act")
        d = dict(zip(info[0::2], info[1::2]))
        self.assertEqual((d["name"], d["version"], d["versions"], d["default"]), ("act@2", 2, [1, 2], 2))
        d1 = dict(zip(*[iter(r.execute_command("FINFO", "act@1"))] * 2))
        self.assertEqual((d1["name"], d1["version"], d1["default"]), ("act", 1, 2))
        for args, words in ((("nope", "1"), "unknown view 'nope'"), (("act", "3"), "has no version '3' (versions: 1, 2)"),
                            (("act", "x"), "has no version 'x'")):
            with self.assertRaises(redis.ResponseError) as cm:
                r.execute_command("FREGISTRY", "DEFAULT", *args)
            self.assertIn(words, str(cm.exception))
        # A snapshot and a restart keep the default and both states.
        self.assertTrue(r.save())
        self.server.stop()
        self.server = self.start()
        r = self.server.redis()
        self.assertEqual(r.execute_command("FREGISTRY", "DEFAULT", "act"), 2)
        check(r, 2)
        # Version 2 removed: its state (mostly 40 notes of 35 bytes) is
        # freed, unqualified names read version 1.
        key = "user:" + users[0]
        before = r.memory_usage(key)
        with open(self.reg_path, "w") as f:
            f.write(VERSIONED_REGISTRY.split("  act@2:")[0])
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertEqual(r.execute_command("FREGISTRY", "DEFAULT", "act"), 1)
        self.assertEqual(r.execute_command("FGET", key, "clicks_10m"), [v1[users[0]]])
        self.assertLess(r.memory_usage(key), before)
        with self.assertRaises(redis.ResponseError):
            r.execute_command("FGET", key, "act@2.clicks_10m")
        # Added back: the kept default applies again; the new version starts empty.
        with open(self.reg_path, "w") as f:
            f.write(VERSIONED_REGISTRY)
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertEqual(r.execute_command("FREGISTRY", "DEFAULT", "act"), 2)
        self.assertEqual(r.execute_command("FGET", key, "clicks_10m", "act@1.clicks_10m"), [0, v1[users[0]]])


class SingleShardVersionTest(VersionTests, unittest.TestCase):
    SHARDS = 1


class ShardedVersionTest(VersionTests, unittest.TestCase):
    SHARDS = 4


# ===========================================================================
# The example registry in conf/ that uses every kind of definition

FULL_REGISTRY = os.path.join(HERE, "..", "..", "conf", "features-full.yaml")


class ExampleRegistryTest(unittest.TestCase):
    """conf/features-full.yaml loads and computes what its comments say."""

    def test_every_kind_of_the_example_registry(self):
        server = ServerProcess(SERVER_BINARY, directives=[("registry", FULL_REGISTRY), ("save", "")]).start()
        try:
            r = server.redis()
            t = int(time.time()) - 60
            dwell = [120.0, 300.0, 45.5, 900.0, 610.0]
            events = [{"user_id": 1, "product_id": 7, "action": "view", "dwell_ms": d, "timestamp": t} for d in dwell]
            events += [{"user_id": 1, "product_id": 8, "action": "click", "timestamp": t},
                       {"user_id": 1, "product_id": 8, "action": "add_to_cart", "timestamp": t},
                       {"user_id": 1, "product_id": 8, "action": "purchase", "price": 19.99, "timestamp": t},
                       {"user_id": 2, "product_id": 8, "action": "purchase", "price": 5.0, "timestamp": t + 1}]
            self.assertEqual(r.execute_command("FEVENT", "user_events", *[json.dumps(e) for e in events]), len(events))
            got = r.execute_command("FGET", "user:1", "clicks_1h", "spend_1h", "basket_24h", "dwell_p50_1h",
                                    "products_1h", "last_action", "user_activity@2.clicks_1h")
            self.assertEqual(got[0], 1)
            self.assertAlmostEqual(float(got[1]), 19.99)
            self.assertAlmostEqual(float(got[2]), 19.99)
            self.assertIsNone(mismatch(quantile_expect(dwell, 0.5), got[3]))
            self.assertEqual(got[4], 2)
            self.assertIn(got[5], ("click", "add_to_cart", "purchase", "view"))  # one time: the last applied
            self.assertEqual(got[6], 2)  # version 2 counts the cart too
            self.assertEqual(r.execute_command("FGET", "user:1", "purchases_7d"), [1])  # FEVENT is not held
            # One session: every event of user 1 is at t.
            self.assertEqual(r.execute_command("FGET", "user:1", "visits_session", "visits_session_start",
                                               "visits_session_duration_ms", "visits_sessions_24h", "session_spend_session"),
                             [8, t * 1000, 0, 1, "19.99"])
            p = r.execute_command("FGET", "product:8", "buyers_24h", "price_p50_24h")
            self.assertEqual(p[0], 2)
            self.assertIsNone(mismatch(quantile_expect([19.99, 5.0], 0.5), p[1]))
            with self.assertRaises(redis.ResponseError) as cm:
                r.execute_command("FEVENT", "user_events", json.dumps({"user_id": 1, "action": "swipe", "timestamp": t}))
            self.assertIn("bad_enum", str(cm.exception))
            # The join: the five views of product 7 were looked up before
            # any of them applied; one more view sees views_1h = 5.
            self.assertEqual(r.execute_command("FGET", "user:1", "popular_views_1h"), [0])
            view = {"user_id": 1, "product_id": 7, "action": "view", "dwell_ms": 10.0, "timestamp": t}
            self.assertEqual(r.execute_command("FEVENT", "user_events", json.dumps(view)), 1)
            self.assertEqual(r.execute_command("FGET", "user:1", "popular_views_1h"), [1])
            self.assertEqual(r.execute_command("FGET", "product:7", "views_1h"), [6])
            # The table: FEVENT names the product by its key field (Kafka by
            # the message key); a later message replaces the values.
            self.assertEqual(r.execute_command("FEVENT", "catalog", json.dumps({"product_id": 7, "category": "books"}),
                                               json.dumps({"product_id": 7, "category": "toys", "list_price": 24.5})), 2)
            self.assertEqual(r.execute_command("FGET", "product:7", "category", "list_price"), ["toys", "24.5"])
            self.assertEqual(r.execute_command("FEVENT", "user_events", json.dumps(view)), 1)
            self.assertEqual(r.execute_command("FGET", "user:1", "toy_views_1h"), [1])
        finally:
            server.stop()


# ===========================================================================


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
