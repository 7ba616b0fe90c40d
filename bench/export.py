#!/usr/bin/python3
"""featurekv-export throughput: rows per second of a training set of
ROWS rows (random users of USERS, random times in the last hour, a run of
rows sharing one time every so often) with the demo registry's 8 user
features, from the running server and from its snapshot file, against
FMGET ... AT of one key over the network (redis-benchmark, 50 clients,
-P16: requests/s = rows/s). Server on CPU 1, clients on CPU 0.

usage: bench/export.py [--rows 200000] [--users 100000] [--build build]
"""
import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port, redis_benchmark, wait_ping, write_demo_events  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURES = ["clicks_1m", "clicks_5m", "clicks_1h", "purchases_1h", "purchases_24h", "products_1h", "last_action",
            "recent_products"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200000)
    ap.add_argument("--users", type=int, default=100000)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    a = ap.parse_args()
    print("command:", " ".join(sys.argv))
    work = tempfile.mkdtemp(prefix="fkv-exportbench-")
    port = free_port()
    reg = os.path.join(ROOT, "conf/features.yaml")
    fkv = subprocess.Popen(["taskset", "-c", "1", os.path.join(a.build, "server/featurekv-server"), "--port", str(port),
                            "--save", "", "--dir", work, "--registry", reg, "--logfile", work + "/fkv.log"])
    try:
        wait_ping(port)
        events = os.path.join(work, "events.jsonl")
        write_demo_events(events, a.users, 5 * a.users, a.users // 10)
        subprocess.run(["taskset", "-c", "0", os.path.join(a.build, "tools/featurekv-load"), "--port", str(port),
                        events], check=True, capture_output=True)
        rnd = random.Random(3)
        now = int(time.time() * 1000)
        rows = os.path.join(work, "rows.csv")
        with open(rows, "w") as f:
            f.write("user_id,ts,label\n")
            n = 0
            while n < a.rows:
                ts = now - rnd.randrange(3600000)
                for _ in range(rnd.choice([1, 1, 1, 1, 8])):
                    f.write("%012d,%d,%d\n" % (rnd.randrange(a.users), ts, rnd.randrange(2)))
                    n += 1
        common = ["--entities", rows, "--entity", "user", "--features", ",".join(FEATURES)]
        results = {}
        for mode, extra in (("server", ["--port", str(port)]),
                            ("snapshot", ["--snapshot", os.path.join(work, "featurekv.snap"), "--registry", reg])):
            if mode == "snapshot":
                subprocess.run(["redis-cli", "-p", str(port), "SAVE"], check=True, capture_output=True)
            t0 = time.monotonic()
            p = subprocess.run(["taskset", "-c", "0", os.path.join(a.build, "tools/featurekv-export")] + common +
                               extra + ["--out", os.path.join(work, mode + ".csv")], capture_output=True, text=True)
            secs = time.monotonic() - t0
            if p.returncode != 0:
                sys.exit(p.stderr)
            results[mode] = a.rows / secs
            m = re.search(r"done: .*", p.stderr)
            print("%-9s %10.0f rows/s  (%s)" % (mode, results[mode], m.group(0) if m else ""))
        same = open(os.path.join(work, "server.csv"), "rb").read() == open(os.path.join(work, "snapshot.csv"), "rb").read()
        print("server and snapshot exports identical:", same)
        rps, p99 = redis_benchmark(port, ["FMGET", "user:__rand_int__", "FEATURES"] + FEATURES + ["AT", str(now)],
                                   a.rows, 16, keyspace=a.users)
        print("%-9s %10.0f rows/s  (redis-benchmark FMGET of one key AT, -P16, p99 %.3f ms)" % ("FMGET", rps, p99))
        print("export from the server / FMGET: %.2f; from the snapshot / FMGET: %.2f" %
              (results["server"] / rps, results["snapshot"] / rps))
    finally:
        fkv.terminate()
        fkv.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
