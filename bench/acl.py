#!/usr/bin/python3
"""What the ACL check costs: GET, SET and FGET at -P16 as the default user
(+@all, no key patterns: one epoch load per command) and as a user with
key patterns (every key argument matched against ~key:* ~user:*), on one
featurekv pinned to CPU 1, redis-benchmark on CPU 0. The two users
alternate for --rounds rounds; prints each round and the median ratio
(target: the keyed user at most 2% slower).

usage: bench/acl.py [--requests 400000] [--rounds 5] [--build build]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port, redis_benchmark, wait_ping  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    a = ap.parse_args()
    print("command:", " ".join(sys.argv))
    work = tempfile.mkdtemp(prefix="fkv-aclbench-")
    port = free_port()
    fkv = subprocess.Popen(["taskset", "-c", "1", os.path.join(a.build, "server/featurekv-server"), "--port",
                            str(port), "--shards", "1", "--save", "", "--dir", work, "--registry",
                            os.path.join(ROOT, "conf/features.yaml"), "--logfile", work + "/fkv.log",
                            "--user", "keyed", "on", ">pw", "~key:*", "~user:*", "+@all"])
    tests = [("GET", ["GET", "key:__rand_int__"]), ("SET", ["SET", "key:__rand_int__", "v"]),
             ("FGET", ["FGET", "user:__rand_int__", "clicks_1h", "last_action"])]
    users = [("default", ()), ("keyed", ("--user", "keyed", "-a", "pw"))]
    try:
        wait_ping(port)
        ratios = {name: [] for name, _ in tests}
        print("%-5s %5s %14s %14s %7s" % ("test", "round", "default rps", "keyed rps", "ratio"))
        for r in range(a.rounds):
            for name, cmd in tests:
                rps = {}
                for user, auth in (users if r % 2 == 0 else users[::-1]):
                    rps[user] = redis_benchmark(port, cmd, a.requests, 16, auth=auth)[0]
                ratios[name].append(rps["keyed"] / rps["default"])
                print("%-5s %5d %14.0f %14.0f %7.3f" % (name, r, rps["default"], rps["keyed"], ratios[name][-1]))
        for name, _ in tests:
            print("%-5s median keyed/default %.3f (%s)" % (name, statistics.median(ratios[name]),
                                                           " ".join("%.3f" % x for x in ratios[name])))
    finally:
        fkv.terminate()
        fkv.wait(timeout=120)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
