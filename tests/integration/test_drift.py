#!/usr/bin/python3
"""FDRIFT through a real server: a shifted feature scores PSI > 0.2 while an
unchanged one stays < 0.1, the figures reach /metrics (also recomputed on
their own every drift-interval), the baseline survives a snapshot and a
restart, and the errors a user can meet.

usage: test_drift.py SERVER SNAPSHOT_TOOL [unittest args]
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fkv_testlib import ServerProcess, wait_until  # noqa: E402
from prom import free_port, http_get, parse_exposition  # noqa: E402

SERVER = sys.argv.pop(1) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "build/server/featurekv-server"
SNAPSHOT_TOOL = sys.argv.pop(1) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") \
    else "build/tools/featurekv-snapshot"

REGISTRY = """
sources:
  tx: {topic: tx, format: json, timestamp: {field: ts, unit: ms}}
entities:
  user: {key: user_id}
views:
  spend:
    entity: user
    source: tx
    ttl: 1d
    features:
      amount: {agg: sum, field: amount, windows: [1h]}
      peak:   {agg: max, field: other, windows: [1h]}
      label:  {agg: last, field: label}
  labels:
    entity: user
    source: tx
    features:
      tag: {agg: last, field: label}
"""


def ev(user, amount, other, ts):
    return json.dumps({"user_id": user, "amount": amount, "other": other, "label": "x", "ts": ts})


def send(r, events, batch=250):
    for i in range(0, len(events), batch):
        part = events[i:i + batch]
        assert r.execute_command("FEVENT", "tx", *part) == len(part)


def rows(r, view):
    return {row[0]: (None if row[1] is None else float(row[1]), row[2], row[3])
            for row in r.execute_command("FDRIFT", view)}


class DriftTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fkv-drift-")
        self.registry = os.path.join(self.tmp, "features.yaml")
        with open(self.registry, "w") as f:
            f.write(REGISTRY)
        self.data = os.path.join(self.tmp, "data")
        os.mkdir(self.data)
        self.srv = None

    def tearDown(self):
        if self.srv is not None:
            self.srv.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, shards=2, mport=None, extra=()):
        directives = [("registry", self.registry), ("save", ""), ("drift-interval", "0")] + list(extra)
        if mport:
            directives.append(("metrics-port", str(mport)))
        self.srv = ServerProcess(SERVER, shards=shards, data_dir=self.data, directives=directives).start()
        return self.srv.redis(decode_responses=True)

    def metric_psi(self, mport, feature):
        status, body, _ = http_get(mport, "/metrics")
        self.assertEqual(status, 200)
        return parse_exposition(body).get(("featurekv_feature_drift_psi",
                                           frozenset({("view", "spend"), ("feature", feature)})))

    def test_shift_is_detected_reported_and_survives_a_restart(self):
        mport = free_port()
        r = self.start(mport=mport)
        rng = random.Random(11)
        now = int(time.time() * 1000)
        users = 3000
        send(r, [ev(u, rng.uniform(0, 100), rng.uniform(0, 100), now) for u in range(users)])
        self.assertEqual(r.execute_command("FDRIFT", "BASELINE", "spend"), "OK")
        same = rows(r, "spend")
        self.assertEqual(sorted(same), ["amount_1h", "peak_1h"])  # numeric features only, named as FGET names them
        for feat, (psi, bn, cn) in same.items():
            self.assertEqual((bn, cn), (users, users), feat)
            self.assertLess(psi, 0.01, feat)
        # The periodic recomputation: turned on now, it publishes without FDRIFT.
        r.config_set("drift-interval", "1")
        # Shift amount (a second event adds 50..150 to every user's sum);
        # peak is unchanged (other = 0 is below every user's maximum).
        send(r, [ev(u, rng.uniform(50, 150), 0, now + 1) for u in range(users)])
        wait_until(lambda: (self.metric_psi(mport, "amount_1h") or 0) > 0.2, timeout=20,
                   what="the periodic drift computation to publish the shift")
        shifted = rows(r, "spend")
        self.assertGreater(shifted["amount_1h"][0], 0.2)
        self.assertLess(shifted["peak_1h"][0], 0.1)
        self.assertEqual(shifted["amount_1h"][1:], (users, users))
        r.config_set("drift-interval", "0")
        wait_until(lambda: self.metric_psi(mport, "amount_1h") == shifted["amount_1h"][0], timeout=10,
                   what="/metrics to show FDRIFT's figure")
        self.assertEqual(r.save(), True)
        info = json.loads(subprocess.run([SNAPSHOT_TOOL, "--json", os.path.join(self.data, "featurekv.snap")],
                                         capture_output=True, text=True, timeout=60, check=True).stdout)
        self.assertEqual([(b["view"], [(f["feature"], f["entities"]) for f in b["features"]]) for b in info["drift"]],
                         [("spend", [("amount_1h", users), ("peak_1h", users)])])
        self.srv.stop()
        r = self.start(mport=mport)
        after = rows(r, "spend")
        for feat in shifted:
            self.assertAlmostEqual(after[feat][0], shifted[feat][0], places=9, msg=feat)
            self.assertEqual(after[feat][1:], shifted[feat][1:], feat)
        # A new baseline of the shifted data scores it 0 again.
        self.assertEqual(r.execute_command("FDRIFT", "BASELINE", "spend"), "OK")
        self.assertLess(rows(r, "spend")["amount_1h"][0], 0.01)

    def test_sampled_baseline_of_many_entities_on_one_shard(self):
        # More entities than the 8,192 values sampled per shard: the
        # baseline comes from a sample, the current side counts them all.
        r = self.start(shards=1)
        rng = random.Random(5)
        now = int(time.time() * 1000)
        users = 20000
        send(r, [ev(u, rng.gauss(50, 10), rng.expovariate(0.1), now) for u in range(users)], batch=1000)
        self.assertEqual(r.execute_command("FDRIFT", "BASELINE", "spend"), "OK")
        for feat, (psi, bn, cn) in rows(r, "spend").items():
            self.assertEqual((bn, cn), (users, users), feat)
            self.assertLess(psi, 0.01, feat)
        # Reads go on while the walks run (they are sliced): FGET answers.
        self.assertEqual(len(r.execute_command("FGET", "user:1", "amount_1h", "peak_1h")), 2)

    def test_errors(self):
        r = self.start()
        for args, text in [(("FDRIFT", "spend"), "no drift baseline"),
                           (("FDRIFT", "BASELINE", "nope"), "unknown view"),
                           (("FDRIFT", "BASELINE", "labels"), "no numeric features"),
                           (("FDRIFT", "a", "b", "c"), "syntax"),
                           (("FDRIFT",), "wrong number of arguments")]:
            with self.assertRaises(Exception) as cm:
                r.execute_command(*args)
            self.assertIn(text, str(cm.exception), args)
        # A baseline of a view without entities yet: rows with nothing counted, no PSI.
        self.assertEqual(r.execute_command("FDRIFT", "BASELINE", "spend"), "OK")
        for feat, (psi, bn, cn) in rows(r, "spend").items():
            self.assertEqual((psi, bn, cn), (None, 0, 0), feat)
        self.assertTrue(r.ping())


if __name__ == "__main__":
    unittest.main(verbosity=2)
