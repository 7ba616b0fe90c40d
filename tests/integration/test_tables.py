"""Table sources (docs/architecture.md, "Table sources"): a Kafka topic
whose message key is the entity's id, each message replacing the entity's
`last` features (latest by offset, not by event time), a tombstone (a
message without a value) deleting them; used as the joined side of an
enrichment join. Against a model, from Kafka (featurekv-mock-kafka, kcat
with keys and null values) on 1 and 4 shards, with a snapshot and restart
in the middle; FEVENT to a table (the key from the event); reloads that make
a source a table and drop its view; RESP3; bad
definitions refused with file:line.

Usage: test_tables.py SERVER MOCK_KAFKA
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

SERVER = sys.argv[1] if len(sys.argv) > 1 else "build/server/featurekv-server"
test_kafka_tools.MOCK = sys.argv[2] if len(sys.argv) > 2 else "build/tools/featurekv-mock-kafka"

REGISTRY = """
sources:
  products: {topic: products, kind: table, format: json, timestamp: {field: ts, unit: ms}}
  clicks:   {topic: clicks, format: json, timestamp: {field: ts, unit: ms}}
  orders:   {topic: orders, format: json, timestamp: {field: ts, unit: ms}}
entities:
  product: {key: pid}
  user: {key: u}
views:
  product_info:
    entity: product
    source: products
    features:
      price:    {agg: last, field: price}
      category: {agg: last, field: cat}
  product_clicks:
    entity: product
    source: clicks
    features:
      clicks:   {agg: count, windows: [1h]}
  user_spend:
    entity: user
    source: orders
    join:
      product: {view: product_info, key: pid}
    features:
      orders:   {agg: count, windows: [1h]}
      toys:     {agg: count, where: "product.category == 'toys'", windows: [1h]}
      spend:    {agg: sum, field: product.price, windows: [1h]}
"""


def num(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


class Model:
    """The table as a compacted topic defines it: per key, the last message
    by offset (a tombstone removes the key). Orders take the product's
    values when they are applied; an order of a product not in the table
    has null joined values, and its spend (a sum of a null) skips it."""

    def __init__(self):
        self.table = {}   # pid (str) -> (price, cat)
        self.users = {}   # u -> [(ts, price, cat)]
        self.missing = 0

    def product(self, key, value):
        if value is None:
            self.table.pop(key, None)
        else:
            self.table[key] = (value["price"], value["cat"])

    def order(self, e):
        p = self.table.get(str(e["pid"]))
        if p is None:
            self.missing += 1
            return False
        self.users.setdefault(e["u"], []).append((e["ts"], p[0], p[1]))
        return True

    def user(self, u, now):
        rows = [r for r in self.users.get(u, []) if r[0] > now - 3600_000]
        if u not in self.users:
            return [None, None, None]
        return [len(rows), sum(1 for r in rows if r[2] == "toys"), float(sum(r[1] for r in rows))]


class TableCase:
    SHARDS = 1

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="fkv-tables-")
        self.reg = os.path.join(self.dir, "reg.yaml")
        with open(self.reg, "w") as f:
            f.write(REGISTRY)
        self.data = os.path.join(self.dir, "data")
        os.mkdir(self.data)
        self.mock = MockCluster("--partitions", "2", "--topic", "products", "--topic", "orders",
                                "--topic", "clicks")
        self.srv = None
        self.sent = 0     # messages produced (each is applied or rejected once)
        self.rejected = 0

    def tearDown(self):
        if self.srv and self.srv.alive():
            self.srv.kill()
        self.mock.kill()

    def start(self):
        self.srv = ServerProcess(SERVER, shards=self.SHARDS, data_dir=self.data,
                                 directives=[("registry", self.reg), ("save", ""),
                                             ("kafka-brokers", self.mock.bootstrap)]).start()
        self.r = self.srv.redis(decode_responses=True)
        self.sent = self.rejected = 0  # INFO's counters start with the process
        return self.r

    def produce(self, topic, lines, keyed=True):
        """kcat with key|value lines; -Z: an empty value (or key) is null."""
        args = ["kcat", "-b", self.mock.bootstrap, "-P", "-t", topic, "-Z"] + (["-K", "|"] if keyed else [])
        p = subprocess.run(args, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.sent += len(lines)

    def settled(self):
        def done():
            i = self.r.info("ingest")
            return i["events_applied"] + i["events_rejected"] == self.sent and i["events_rejected"] == self.rejected
        wait_until(done, 60, what="%d messages taken, %d rejected" % (self.sent, self.rejected))

    def check(self, model, now):
        pids = [str(p) for p in range(1, 31)]
        got = self.r.execute_command("FMGET", *["product:" + p for p in pids], "FEATURES", "price", "category")
        for p, row in zip(pids, got):
            want = [float(model.table[p][0]), model.table[p][1]] if p in model.table else [None, None]
            self.assertEqual([num(g) for g in row], want, "product " + p)
        users = list(range(1, 21))
        got = self.r.execute_command("FMGET", *["user:%d" % u for u in users], "FEATURES",
                                     "orders_1h", "toys_1h", "spend_1h", "AT", now)
        for u, row in zip(users, got):
            self.assertEqual([num(g) for g in row], model.user(u, now), "user %d" % u)

    def updates(self, rnd, model, now, n, tombstones):
        """n table messages in partition order per key: prices that go up
        and down with event times that go back and forth (the offset
        decides, not the time), and tombstones."""
        lines = []
        for _ in range(n):
            pid = str(rnd.randrange(1, 31))
            if tombstones and rnd.random() < 0.2:
                lines.append(pid + "|")
                model.product(pid, None)
                continue
            v = {"price": rnd.randrange(1, 100), "cat": rnd.choice(["toys", "books", "food"]),
                 "ts": now - rnd.randrange(60_000, 3_000_000)}
            lines.append(pid + "|" + json.dumps(v))
            model.product(pid, v)
        return lines

    def orders(self, rnd, model, now, n):
        out = []
        for i in range(n):
            e = {"u": rnd.randrange(1, 21), "pid": rnd.randrange(1, 31), "ts": now - 1_000_000 + i}
            if not model.order(e):
                self.rejected += 1  # the view's only reading of it skips it: missing_field
            out.append(json.dumps(e))
        return out

    def test_a_table_is_latest_by_offset_and_tombstones_delete(self):
        rnd = random.Random(20261203 + self.SHARDS)
        now = int(time.time() * 1000)
        model = Model()
        self.start()
        # Clicks make product entities with a second view: a tombstone
        # deletes the table's view only.
        self.produce("clicks", [json.dumps({"pid": p, "ts": now - 1000}) for p in range(1, 31)], keyed=False)
        self.produce("products", self.updates(rnd, model, now, 200, tombstones=False))
        self.settled()
        self.check(model, now)
        # (Topics are consumed in no set order between them: each step
        # settles before the next, so the model knows what each order saw.)
        self.produce("orders", self.orders(rnd, model, now, 150), keyed=False)
        self.settled()
        self.produce("products", self.updates(rnd, model, now, 200, tombstones=True))
        self.settled()
        self.check(model, now)
        self.produce("orders", self.orders(rnd, model, now, 150), keyed=False)
        self.settled()
        self.check(model, now)
        info = self.r.info("ingest")
        self.assertGreater(info["tombstones"], 0)
        self.assertGreater(model.missing, 0)
        self.assertEqual(info["join_missing_user_spend"], model.missing)
        gone = [p for p in range(1, 31) if str(p) not in model.table]
        self.assertTrue(gone)
        for p in gone:  # the clicks view is still there
            self.assertEqual(self.r.execute_command("FGET", "product:%d" % p, "clicks_1h", "AT", now), [1])
        # A snapshot and restart: the table, the deletions and the offsets
        # come back together; what follows applies once.
        self.assertTrue(self.r.save())
        self.srv.stop()
        self.start()
        self.check(model, now)
        self.settled()  # nothing read twice
        self.produce("products", self.updates(rnd, model, now, 100, tombstones=True))
        self.settled()
        self.produce("orders", self.orders(rnd, model, now, 100), keyed=False)
        self.settled()
        self.check(model, now)
        # A tombstone of a product with no other view deletes the key.
        self.produce("products", ["999|" + json.dumps({"price": 5, "cat": "x", "ts": now})])
        wait_until(lambda: self.r.exists("product:999") == 1, 60, what="product:999 made")
        self.produce("products", ["999|"])
        wait_until(lambda: self.r.exists("product:999") == 0, 60, what="product:999 deleted")


class OneShard(TableCase, unittest.TestCase):
    SHARDS = 1


class FourShards(TableCase, unittest.TestCase):
    SHARDS = 4


class TableRulesTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="fkv-tables-rules-")
        self.reg = os.path.join(self.dir, "reg.yaml")
        with open(self.reg, "w") as f:
            f.write(REGISTRY)
        self.mock = MockCluster("--partitions", "1", "--topic", "products", "--topic", "orders",
                                "--topic", "clicks")
        self.srv = ServerProcess(SERVER, shards=2, directives=[("registry", self.reg), ("save", ""),
                                                               ("kafka-brokers", self.mock.bootstrap)]).start()
        self.r = self.srv.redis(decode_responses=True)

    def tearDown(self):
        self.srv.stop()
        self.mock.kill()

    def kcat(self, lines, *flags):
        p = subprocess.run(["kcat", "-b", self.mock.bootstrap, "-P", "-t", "products", "-Z", *flags],
                           input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_keys_from_the_message_or_the_value_and_what_is_rejected(self):
        now = int(time.time() * 1000)
        self.kcat([
            "7|" + json.dumps({"pid": 8, "price": 10, "cat": "toys", "ts": now}),  # the message key wins
            "|" + json.dumps({"pid": 9, "price": 11, "cat": "food", "ts": now}),  # no key: the value's
            "|" + json.dumps({"price": 12, "cat": "food", "ts": now}),            # neither: missing_key
            "|",                                                                    # keyless tombstone: missing_key
            "5|not json",                                                           # invalid_json
            "7|" + json.dumps({"price": 13, "ts": now}),                            # the row without cat
        ], "-K", "|")

        def taken():
            i = self.r.info("ingest")
            return i["events_applied"] + i["events_rejected"] == 6
        wait_until(taken, 60, what="6 messages taken")
        info = self.r.info("ingest")
        self.assertEqual((info["events_applied"], info["events_rejected"]), (3, 3))
        self.assertEqual(info["rejected_missing_key"], 2)
        self.assertEqual(info["rejected_invalid_json"], 1)
        # A message is the whole row: the category it lacks is null now.
        self.assertEqual(self.r.execute_command("FGET", "product:7", "price", "category"), ["13", None])
        self.assertEqual(self.r.execute_command("FGET", "product:9", "price"), ["11"])
        self.assertEqual(self.r.exists("product:8"), 0)
        errors = self.r.execute_command("FINGEST", "ERRORS")
        self.assertIn("missing_key", str(errors))

    def test_fevent_to_a_table_takes_the_key_from_the_event_and_the_latest_wins(self):
        now = int(time.time() * 1000)
        self.assertEqual(self.r.execute_command(
            "FEVENT", "products", json.dumps({"pid": 3, "price": 30, "cat": "toys", "ts": now - 1000}),
            json.dumps({"pid": 3, "price": 20, "cat": "books", "ts": now - 5000})), 2)
        # An older event time still replaces: a table is latest by arrival.
        self.assertEqual(self.r.execute_command("FGET", "product:3", "price", "category"), ["20", "books"])
        # A stream `last` keeps the newest by event time (the contrast).
        self.r.execute_command("FEVENT", "orders", json.dumps({"u": 1, "pid": 3, "ts": now - 100}))
        self.assertEqual(self.r.execute_command("FGET", "user:1", "spend_1h", "toys_1h", "AT", now), ["20", 0])
        # FSET on a table's feature replaces it too, whatever its TS.
        self.assertEqual(self.r.execute_command("FSET", "product:3", "price", "25", "TS", now - 60_000), "OK")
        self.assertEqual(self.r.execute_command("FGET", "product:3", "price"), ["25"])
        self.r.execute_command("FSET", "product:3", "price", "20")
        raw = self.srv.raw()
        raw.command("HELLO", "3")
        self.assertEqual(raw.command("FGET", "product:3", "price"), ["20"])
        self.assertEqual(raw.command("FGET", "user:1", "spend_1h", "AT", str(now)), [20.0])
        info = self.r.execute_command("FINFO", "user_spend")
        joins = dict(zip(info[::2], info[1::2]))["joins"] if isinstance(info, list) else info["joins"]
        self.assertEqual(len(joins), 1)
        self.assertIn("product_info", str(joins))
        src = self.r.execute_command("FINFO", "product_info")
        src = dict(zip(src[::2], src[1::2])) if isinstance(src, list) else src
        self.assertEqual(src["source_kind"], "table")

    def test_a_reload_makes_a_source_a_table_and_another_drops_its_view(self):
        now = int(time.time() * 1000)
        stream = REGISTRY.replace("kind: table, ", "")
        with open(self.reg, "w") as f:
            f.write(stream)
        self.assertEqual(self.r.execute_command("FREGISTRY", "RELOAD"), "OK")
        ev = [json.dumps({"pid": 4, "price": 40, "cat": "toys", "ts": now - 1000}),
              json.dumps({"pid": 4, "price": 30, "cat": "food", "ts": now - 5000})]
        self.r.execute_command("FEVENT", "products", *ev)
        # A stream's last keeps the newest event time.
        self.assertEqual(self.r.execute_command("FGET", "product:4", "price", "category"), ["40", "toys"])
        info = self.r.execute_command("FINFO", "product_info")
        self.assertEqual(dict(zip(info[::2], info[1::2]))["source_kind"], "stream")
        # The same view as a table: the state stays, the latest now wins.
        with open(self.reg, "w") as f:
            f.write(REGISTRY)
        self.assertEqual(self.r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertEqual(self.r.execute_command("FGET", "product:4", "price", "category"), ["40", "toys"])
        self.r.execute_command("FEVENT", "products", ev[1])
        self.assertEqual(self.r.execute_command("FGET", "product:4", "price", "category"), ["30", "food"])
        # Without the table's view (and the join that reads it): its state
        # goes with it; a tombstone then deletes nothing.
        without = REGISTRY.split("  product_clicks:")[0].split("  product_info:")[0] + \
            "  product_clicks:" + REGISTRY.split("  product_clicks:")[1].split("  user_spend:")[0]
        with open(self.reg, "w") as f:
            f.write(without)
        self.assertEqual(self.r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertEqual(self.r.exists("product:4"), 0)
        self.kcat(["4|"], "-K", "|")
        wait_until(lambda: self.r.info("ingest")["tombstones"] == 1, 60, what="the tombstone taken")
        self.assertEqual(self.r.info("ingest")["events_rejected"], 0)

    def test_bad_table_definitions_are_refused_with_file_and_line(self):
        cases = [
            (REGISTRY.replace("price:    {agg: last, field: price}", "price:    {agg: sum, field: price, windows: [1h]}"),
             "is a table: its views hold only 'last' features"),
            (REGISTRY.replace("kind: table", "kind: tabel"), "unknown kind 'tabel' (stream or table)"),
            (REGISTRY + "  other:\n    entity: user\n    source: products\n    features:\n"
                        "      p: {agg: last, field: price}\n", "a table's message key names an entity of one type"),
            (REGISTRY.replace("category: {agg: last, field: cat}",
                              "category: {agg: last, field: cat, session: {gap: 5m}}"), "is a table"),
        ]
        for text, want in cases:
            path = os.path.join(self.dir, "bad.yaml")
            with open(path, "w") as f:
                f.write(text)
            srv = ServerProcess(SERVER, directives=[("registry", path), ("save", "")])
            with self.assertRaises(Exception) as cm:
                srv.start()
            self.assertIn(want, str(cm.exception))
            self.assertIn("bad.yaml:", str(cm.exception), want)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1] + sys.argv[3:], verbosity=2)
