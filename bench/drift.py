#!/usr/bin/python3
"""FDRIFT on many entities: featurekv holding U users of the demo registry
(loaded with featurekv-load), then

- the time of FDRIFT BASELINE user_activity and of FDRIFT user_activity
  (each a sliced walk of every entity on every shard);
- FGET p99 (redis-benchmark, 20 clients) idle vs while FDRIFT runs back to
  back, and the ratio: the walks must not stall reads.

usage: bench/drift.py [--users 1000000] [--events 3000000] [--products 10000]
       [--shards 2] [--build build] [--quick] [--interval 0]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

import redis  # Debian's python3-redis (/usr/bin/python3)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import demo_arguments, free_port, p99_of, wait_ping, write_demo_events  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURES = ["clicks_1h", "purchases_24h", "products_1h"]


def main():
    ap = demo_arguments(argparse.ArgumentParser(), ROOT)
    ap.add_argument("--interval", type=float, default=0, help="seconds between two FDRIFT (0: back to back)")
    a = ap.parse_args()
    if a.quick:
        a.users, a.events = 100000, 300000
    work = tempfile.mkdtemp(prefix="fkv-driftbench-")
    print("command:", " ".join(sys.argv))
    port = free_port()
    srv = subprocess.Popen([os.path.join(a.build, "server/featurekv-server"), "--port", str(port), "--shards",
                            str(a.shards), "--save", "", "--dir", work, "--drift-interval", "0", "--registry",
                            os.path.join(ROOT, "conf/features.yaml"), "--logfile", work + "/fkv.log"])
    try:
        wait_ping(port)
        path = os.path.join(work, "events.jsonl")
        write_demo_events(path, a.users, a.events, a.products)
        subprocess.run([os.path.join(a.build, "tools/featurekv-load"), "--port", str(port), path], check=True,
                       stderr=subprocess.DEVNULL)
        f = redis.Redis(port=port, decode_responses=True)
        print(f"entities: {f.dbsize():,}")
        t0 = time.time()
        f.execute_command("FDRIFT", "BASELINE", "user_activity")
        print(f"FDRIFT BASELINE user_activity: {time.time() - t0:.2f} s")
        t0 = time.time()
        rows = f.execute_command("FDRIFT", "user_activity")
        print(f"FDRIFT user_activity: {time.time() - t0:.2f} s")
        for row in rows:
            print("  ", row)
        nreq = 200000 if not a.quick else 50000
        cmd = ["FGET", "user:__rand_int__", *FEATURES]
        idle = p99_of(port, cmd, a.users, nreq)
        stop = threading.Event()
        walks = [0]

        def keep_walking():
            c = redis.Redis(port=port)
            while not stop.is_set():
                c.execute_command("FDRIFT", "user_activity")
                walks[0] += 1
                if a.interval > 0:
                    stop.wait(a.interval)

        t = threading.Thread(target=keep_walking)
        t.start()
        busy = p99_of(port, cmd, a.users, nreq)
        stop.set()
        t.join()
        print(f"\nFGET 3 features p99 ms ({nreq:,} requests, 20 clients): idle {idle[0]:.3f}, "
              f"during FDRIFT walks every {a.interval} s {busy[0]:.3f} ({walks[0]} walks): {busy[0] / max(idle[0], 1e-9):.2f}x; "
              f"rps {idle[1]:,.0f} / {busy[1]:,.0f}")
    finally:
        srv.terminate()
        srv.wait(timeout=120)


if __name__ == "__main__":
    main()
