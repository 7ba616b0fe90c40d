#!/usr/bin/python3
"""Memory of a quantile aggregation's tiles (DDSketch, 1% accuracy):
one entity per row gets 60 one-minute tiles of N latencies each
(lognormal, median ~20 ms, p99 ~200 ms, three decimals), and MEMORY USAGE
of the entity is divided by its tiles; a count aggregation over the same
tiles is the yardstick. Prints bytes per tile and the number of buckets a
tile holds on average.

usage: bench/quantile.py [--build build]
"""
import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import shutil
import time

import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port, wait_ping  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGISTRY = """\
sources:
  req: {topic: req, timestamp: {field: ts, unit: ms}}
entities:
  svc: {key: svc}
views:
  q:
    entity: svc
    source: req
    features:
      lat: {agg: quantile, field: ms, q: [0.5, 0.95, 0.99], windows: [1h], resolution: 1m}
  c:
    entity: cnt
    source: req
    features:
      n: {agg: count, windows: [1h], resolution: 1m}
"""
GAMMA = 1.01 / 0.99


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    a = ap.parse_args()
    print("command:", " ".join(sys.argv))
    work = tempfile.mkdtemp(prefix="fkv-qbench-")
    reg = os.path.join(work, "features.yaml")
    with open(reg, "w") as f:
        f.write(REGISTRY.replace("entities:\n", "entities:\n  cnt: {key: cnt}\n"))
    port = free_port()
    fkv = subprocess.Popen([os.path.join(a.build, "server/featurekv-server"), "--port", str(port), "--save", "",
                            "--dir", work, "--registry", reg, "--logfile", work + "/fkv.log"])
    try:
        wait_ping(port)
        r = redis.Redis(port=port, decode_responses=True)
        rnd = random.Random(1)
        now = int(time.time() * 1000) // 60000 * 60000
        print("%10s %12s %12s %14s" % ("per tile", "bytes/tile", "buckets/tile", "count bytes/tile"))
        for per_tile in (1, 10, 100, 1000, 10000):
            svc = "s%d" % per_tile
            buckets = 0
            for tile in range(60):
                ts = now - tile * 60000 - 1
                vals = [round(rnd.lognormvariate(3, 1), 3) for _ in range(per_tile)]
                buckets += len({math.ceil(math.log(v) / math.log(GAMMA)) for v in vals if v > 0})
                evs = [json.dumps({"svc": svc, "cnt": svc, "ts": ts, "ms": v}) for v in vals]
                for i in range(0, len(evs), 500):
                    r.execute_command("FEVENT", "req", *evs[i:i + 500])
            q_bytes = r.memory_usage("svc:" + svc)
            c_bytes = r.memory_usage("cnt:" + svc)
            print("%10d %12.1f %12.1f %14.1f" % (per_tile, q_bytes / 60.0, buckets / 60.0, c_bytes / 60.0))
    finally:
        fkv.terminate()
        fkv.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
