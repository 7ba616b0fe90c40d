#!/usr/bin/python3
"""Direct writes with the append-only file on: SET and FEVENT (against
Redis's HINCRBY, the nearest thing it has to counting an event) at -P16 and
-P1, featurekv and redis-server with the same appendfsync in the same run,
each pinned to CPU 1 and redis-benchmark to CPU 0. Prints requests/s, p99
and the ratio, and each server's CPU time per request (from /proc, steadier
than the rates on a shared machine: "cpu ratio" is Redis's over
featurekv's, above 1 when featurekv spends less); then featurekv with
appendonly off as the baseline. A mode
ending in "-enc" (e.g. "everysec-enc") runs featurekv with encryption at
rest on (redis-server has none: the ratio is the whole cost of it).

usage: bench/aof.py [--requests 200000] [--fsync "everysec always everysec-enc"] [--build build]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import cpu_seconds, free_port, redis_benchmark, wait_ping  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVENT = '{"user_id":"__rand_int__","product_id":7,"action":"click","timestamp":%d}'


def bench(proc, port, cmd, n, pipeline):
    """(requests/s, p99 ms, server CPU microseconds per request)."""
    before = cpu_seconds(proc.pid)
    rps, p99 = redis_benchmark(port, cmd, n, pipeline)
    return rps, p99, (cpu_seconds(proc.pid) - before) * 1e6 / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--fsync", default="everysec always")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    a = ap.parse_args()
    print("command:", " ".join(sys.argv))
    event = EVENT % int(time.time())
    tests = [("SET", ["SET", "key:__rand_int__", "v"], ["SET", "key:__rand_int__", "v"]),
             ("FEVENT / HINCRBY", ["FEVENT", "user_events", event], ["HINCRBY", "user:__rand_int__", "clicks", "1"])]
    print("%-10s %-18s %3s %14s %14s %7s %10s %10s %11s %11s %9s" % (
        "fsync", "test", "P", "featurekv rps", "redis rps", "ratio", "fkv p99", "redis p99", "fkv us/req",
        "redis us/req", "cpu ratio"))
    for fsync in a.fsync.split() + ["off"]:
        work = tempfile.mkdtemp(prefix="fkv-aofbench-")
        fport, rport = free_port(), free_port()
        mode = fsync.removesuffix("-enc")
        aof = ["--appendonly", "no"] if fsync == "off" else ["--appendonly", "yes", "--appendfsync", mode]
        enc = []
        if fsync.endswith("-enc"):
            with open(work + "/aof.key", "wb") as k:
                k.write(os.urandom(32))
            enc = ["--snapshot-encryption-key-file", work + "/aof.key"]
        fkv = subprocess.Popen(["taskset", "-c", "1", os.path.join(a.build, "server/featurekv-server"), "--port",
                                str(fport), "--shards", "1", "--save", "", "--dir", work, "--registry",
                                os.path.join(ROOT, "conf/features.yaml"), "--logfile", work + "/fkv.log"] + aof + enc)
        red = subprocess.Popen(["taskset", "-c", "1", "redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                                "--save", "", "--dir", work] + aof, stdout=subprocess.DEVNULL)
        try:
            wait_ping(fport)
            wait_ping(rport)
            for name, fcmd, rcmd in tests:
                for p in (16, 1):
                    n = a.requests if p == 16 else a.requests // 4
                    f = bench(fkv, fport, fcmd, n, p)
                    r = bench(red, rport, rcmd, n, p)
                    print("%-10s %-18s %3d %14.0f %14.0f %7.2f %10.3f %10.3f %11.2f %11.2f %9.2f" % (
                        fsync, name, p, f[0], r[0], f[0] / r[0], f[1], r[1], f[2], r[2], r[2] / f[2]))
        finally:
            for proc in (fkv, red):
                proc.terminate()
                proc.wait(timeout=120)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
