"""Enrichment joins (docs/architecture.md, "Joins") against a brute-force
model: orders joined with the product's current price and category at the
moment each order is applied, through FEVENT on 1 and 4 shards; product
updates between orders (each order keeps what it saw); missing products
counted per view; a kill -9 with the append-only file, whose replay
enriches each order as it was enriched when acknowledged (not with the
product's later price); a snapshot and restart; a reload that drops the
join; RESP3; bad definitions refused with file:line. And from Kafka
(featurekv-mock-kafka, kcat): a batch's lookups in one round to the shards.

Usage: test_joins.py SERVER MOCK_KAFKA
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fkv_testlib import ServerProcess, wait_until  # noqa: E402
from test_kafka_tools import MockCluster  # noqa: E402
import test_kafka_tools  # noqa: E402
import redis  # noqa: E402

SERVER = sys.argv[1] if len(sys.argv) > 1 else "build/server/featurekv-server"
test_kafka_tools.MOCK = sys.argv[2] if len(sys.argv) > 2 else "build/tools/featurekv-mock-kafka"

REGISTRY = """
sources:
  orders:   {topic: orders, format: json, timestamp: {field: ts, unit: ms}}
  products: {topic: products, format: json, timestamp: {field: ts, unit: ms}}
entities:
  user: {key: u}
  product: {key: pid}
views:
  product_info:
    entity: product
    source: products
    features:
      price:    {agg: last, field: price}
      category: {agg: last, field: cat}
  user_spend:
    entity: user
    source: orders
    join:
      product: {view: product_info, key: pid}
    features:
      orders:   {agg: count, windows: [1h]}
      toys:     {agg: count, where: "product.category == 'toys'", windows: [1h]}
      big:      {agg: count, where: "product.price >= 50", windows: [1h]}
      cats:     {agg: count_distinct, field: product.category, windows: [1h]}
      last_cat: {agg: last, field: product.category}
"""

SPEND = "      spend:    {agg: sum, field: product.price, windows: [1h]}\n"
FEATURES = ["orders_1h", "toys_1h", "big_1h", "cats_1h", "last_cat", "spend_1h"]


class Model:
    """Products as `last` keeps them; orders enriched with the product's
    values at the moment they are applied. An order whose product is
    unknown has null joined values: spend (a sum of a null) makes the view
    skip it (missing_field), as any null aggregated field does."""

    def __init__(self):
        self.products = {}  # pid -> (ts, price, cat)
        self.users = {}  # u -> list of (ts, price, cat)
        self.missing = 0
        self.skipped = 0

    def product(self, e):
        old = self.products.get(e["pid"])
        if old is None or e["ts"] >= old[0]:
            self.products[e["pid"]] = (e["ts"], e["price"], e["cat"])

    def order(self, e):
        p = self.products.get(e["pid"])
        if p is None:
            self.missing += 1
            self.skipped += 1
            return
        self.users.setdefault(e["u"], []).append((e["ts"], p[1], p[2]))

    def features(self, u, now):
        rows = [r for r in self.users.get(u, []) if r[0] > now - 3600_000]
        if u not in self.users:
            return [None] * len(FEATURES)
        last = max(self.users[u], key=lambda r: r[0])[2] if self.users[u] else None
        return [len(rows), sum(1 for r in rows if r[2] == "toys"), sum(1 for r in rows if r[1] >= 50),
                len({r[2] for r in rows}), last, float(sum(r[1] for r in rows))]


def normalize(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


class JoinCase:
    SHARDS = 1

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="fkv-joins-")
        self.reg = os.path.join(self.dir, "reg.yaml")
        self.write(REGISTRY + SPEND)
        self.data = os.path.join(self.dir, "data")
        os.mkdir(self.data)
        self.srv = None

    def tearDown(self):
        if self.srv and self.srv.alive():
            self.srv.kill()

    def write(self, text):
        with open(self.reg, "w") as f:
            f.write(text)

    def start(self, *extra):
        self.srv = ServerProcess(SERVER, shards=self.SHARDS, data_dir=self.data,
                                 directives=[("registry", self.reg), ("save", "")] + list(extra)).start()
        return self.srv.redis(decode_responses=True)

    def traffic(self, rnd, now, n):
        """Product updates and orders, in send order: prices change between
        orders; a few orders name a product never seen."""
        out = []
        t = now - 50 * 60_000
        for pid in range(1, 21):
            out.append(("products", {"pid": pid, "ts": t, "price": rnd.randrange(1, 100),
                                     "cat": rnd.choice(["toys", "books", "food"])}))
        for i in range(n):
            t += rnd.randrange(1, 5000)
            if rnd.random() < 0.15:
                pid = rnd.randrange(1, 21)
                out.append(("products", {"pid": pid, "ts": t, "price": rnd.randrange(1, 100),
                                         "cat": rnd.choice(["toys", "books", "food"])}))
            else:
                out.append(("orders", {"u": rnd.randrange(1, 31), "pid": rnd.randrange(1, 23), "ts": t}))
        return out

    def send(self, r, model, traffic):
        """Runs of one source in one FEVENT, in send order."""
        i = 0
        while i < len(traffic):
            src = traffic[i][0]
            j = i
            while j < len(traffic) and traffic[j][0] == src and j - i < 50:
                j += 1
            body = [json.dumps(e) for _, e in traffic[i:j]]
            # An order of an unknown product is skipped by the only view
            # it feeds, so FEVENT names it rejected (missing_field).
            want = []
            for k, (_, e) in enumerate(traffic[i:j]):
                if src == "orders" and e["pid"] not in model.products:
                    want.append("#%d: missing_field" % (k + 1))
                (model.product if src == "products" else model.order)(e)
            try:
                self.assertEqual(r.execute_command("FEVENT", src, *body), len(body))
                got = []
            except redis.ResponseError as e:
                got = str(e).split(": ", 1)[1].split("; ")
            self.assertEqual(got, want)
            i = j

    def check(self, r, model, now):
        users = list(range(1, 31))
        got = r.execute_command("FMGET", *["user:%d" % u for u in users], "FEATURES", *FEATURES, "AT", now)
        for u, row in zip(users, got):
            want = model.features(u, now)
            self.assertEqual([normalize(g) for g in row], want, "user %d" % u)

    def test_orders_are_enriched_with_the_product_at_their_moment(self):
        rnd = random.Random(20261203 + self.SHARDS)
        r = self.start(("appendonly", "yes"), ("appendfsync", "always"))
        now = int(time.time() * 1000)
        model = Model()
        traffic = self.traffic(rnd, now, 600)
        self.send(r, model, traffic)
        self.assertGreater(model.missing, 0)
        self.check(r, model, now)
        info = r.info("ingest")
        self.assertEqual(info["join_missing_user_spend"], model.missing)
        self.assertEqual(info["view_skipped_user_spend_missing_field"], model.skipped)
        # RESP3: the joined sum as a double.
        raw = self.srv.raw()
        raw.command("HELLO", "3")
        u = next(u for u in range(1, 31) if model.features(u, now)[0])
        self.assertEqual(raw.command("FGET", "user:%d" % u, "spend_1h", "AT", str(now)), [model.features(u, now)[5]])
        # Every product changes price after the orders: a replay of the
        # append-only file must not take the new prices.
        late = [("products", {"pid": pid, "ts": now - 60_000, "price": 1000 + pid, "cat": "new"}) for pid in range(1, 21)]
        self.send(r, model, late)
        self.check(r, model, now)
        self.srv.kill()
        r = self.start(("appendonly", "yes"), ("appendfsync", "always"))
        self.check(r, model, now)
        # A snapshot and restart (the file rewritten to what follows it).
        self.assertTrue(r.save())
        self.srv.stop()
        r = self.start(("appendonly", "yes"), ("appendfsync", "always"))
        self.check(r, model, now)
        # New orders see the new prices.
        more = [("orders", {"u": 1, "pid": 3, "ts": now - 30_000})]
        self.send(r, model, more)
        self.check(r, model, now)
        self.assertEqual(normalize(r.execute_command("FGET", "user:1", "last_cat", "AT", now)[0]), "new")

    def test_a_reload_without_the_join_keeps_the_rest(self):
        r = self.start()
        now = int(time.time() * 1000)
        r.execute_command("FEVENT", "products", json.dumps({"pid": 1, "ts": now - 1000, "price": 70, "cat": "toys"}))
        r.execute_command("FEVENT", "orders", json.dumps({"u": 5, "pid": 1, "ts": now - 500}))
        self.assertEqual(r.execute_command("FGET", "user:5", "orders_1h", "toys_1h", "big_1h", "spend_1h", "AT", now),
                         [1, 1, 1, "70"])
        # The same view without its join: the joined aggregations go, the
        # plain count keeps its state.
        self.write(REGISTRY.replace("    join:\n      product: {view: product_info, key: pid}\n", "")
                   .split("      toys:")[0])
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertEqual(r.execute_command("FGET", "user:5", "orders_1h", "AT", now), [1])
        r.execute_command("FEVENT", "orders", json.dumps({"u": 5, "pid": 1, "ts": now - 400}))
        self.assertEqual(r.execute_command("FGET", "user:5", "orders_1h", "AT", now), [2])
        # Back with the join: the joined ones start empty.
        self.write(REGISTRY + SPEND)
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertEqual(r.execute_command("FGET", "user:5", "orders_1h", "toys_1h", "spend_1h", "AT", now), [2, 0, "0"])

    def test_bad_definitions_are_refused_with_file_and_line(self):
        head = REGISTRY.split("  user_spend:")[0]
        view = ("  user_spend:\n    entity: user\n    source: orders\n    join:\n      {join}\n"
                "    features:\n      {feature}\n")
        cases = [
            ("product: {view: nope, key: pid}", "x: {agg: sum, field: product.price, windows: [1h]}",
             "undefined view 'nope'"),
            ("product: {view: product_info, key: pid}", "x: {agg: sum, field: product.weight, windows: [1h]}",
             "has no feature 'weight'"),
            ("product: {view: product_info, key: pid}", "x: {agg: count, windows: [1h]}",
             "no feature of the view uses it"),
            ("product: {view: product_info}", "x: {agg: sum, field: product.price, windows: [1h]}",
             "needs 'view' and 'key'"),
            ("me: {view: user_spend, key: u}", "x: {agg: sum, field: me.x_1h, windows: [1h]}",
             "closes a cycle of joins"),
        ]
        for join, feature, want in cases:
            path = os.path.join(self.dir, "bad.yaml")
            with open(path, "w") as f:
                f.write(head + view.replace("{join}", join).replace("{feature}", feature))
            srv = ServerProcess(SERVER, directives=[("registry", path), ("save", "")])
            with self.assertRaises(Exception) as cm:
                srv.start()
            self.assertIn(want, str(cm.exception), join + " / " + feature)
            self.assertIn("bad.yaml:", str(cm.exception), want)


class KafkaJoinTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="fkv-joins-kafka-")
        self.reg = os.path.join(self.dir, "reg.yaml")
        with open(self.reg, "w") as f:
            f.write(REGISTRY + SPEND)
        self.mock = MockCluster("--partitions", "2", "--topic", "orders", "--topic", "products")
        self.srv = ServerProcess(SERVER, shards=3, directives=[("registry", self.reg), ("save", ""),
                                                               ("kafka-brokers", self.mock.bootstrap)]).start()
        self.r = self.srv.redis(decode_responses=True)

    def tearDown(self):
        self.srv.stop()
        self.mock.kill()

    def kcat(self, topic, events):
        p = subprocess.run(["kcat", "-b", self.mock.bootstrap, "-P", "-t", topic],
                           input="\n".join(json.dumps(e) for e in events) + "\n",
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)

    def settled(self, applied, rejected):
        def done():
            i = self.r.info("ingest")
            return i["events_applied"] == applied and i["events_rejected"] == rejected
        wait_until(done, 60, what="%d applied, %d rejected" % (applied, rejected))

    def test_orders_from_kafka_are_enriched_in_batches(self):
        rnd = random.Random(7)
        now = int(time.time() * 1000)
        model = Model()
        products = [{"pid": pid, "ts": now - 600_000, "price": rnd.randrange(1, 100),
                     "cat": rnd.choice(["toys", "books", "food"])} for pid in range(1, 21)]
        sent = [0]

        def step(topic, events):
            """Produces the events, feeds the model, waits until all are applied or rejected."""
            self.kcat(topic, events)
            for e in events:
                (model.product if topic == "products" else model.order)(e)
            sent[0] += len(events)
            self.settled(sent[0] - model.missing, model.missing)

        step("products", products)
        step("orders", [{"u": rnd.randrange(1, 31), "pid": rnd.randrange(1, 23), "ts": now - 500_000 + i}
                        for i in range(400)])
        JoinCase.check(self, self.r, model, now)
        self.assertEqual(self.r.info("ingest")["join_missing_user_spend"], model.missing)
        # New prices, then more orders: they take the new ones.
        step("products", [{"pid": pid, "ts": now - 400_000, "price": 200 + pid, "cat": "toys"} for pid in range(1, 21)])
        step("orders", [{"u": rnd.randrange(1, 31), "pid": rnd.randrange(1, 21), "ts": now - 300_000 + i}
                        for i in range(100)])
        JoinCase.check(self, self.r, model, now)


class OneShard(JoinCase, unittest.TestCase):
    SHARDS = 1


class FourShards(JoinCase, unittest.TestCase):
    SHARDS = 4


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1] + sys.argv[3:], verbosity=2)
