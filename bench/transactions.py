#!/usr/bin/python3
"""MULTI/EXEC against plain pipelining, featurekv and redis-server in the
same run: one client sends batches of B groups of 10 INCRs, each group
either wrapped in MULTI ... EXEC or not, and reads every reply; the figure
is groups per second (a group = 10 commands). Keys: the same key ten times
(one shard), or ten keys spread over the shards (featurekv with --shards 2
then parks every shard for each EXEC).

usage: bench/transactions.py [--groups 20000] [--batch 100] [--build build]
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port, wait_ping  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cmd(*args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def run(port, keys, transactional, groups, batch):
    group = b"".join(cmd(b"INCR", k) for k in keys)
    if transactional:
        group = cmd(b"MULTI") + group + cmd(b"EXEC")
    payload = group * batch
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Lines per batch of replies: plain: n integer lines per group; MULTI:
    # +OK, n +QUEUED, *n and n integers.
    lines_per_group = len(keys) if not transactional else 1 + len(keys) + 1 + len(keys)
    want = lines_per_group * batch
    t0 = time.perf_counter()
    done = 0
    while done < groups:
        s.sendall(payload)
        got = 0
        while got < want:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise SystemExit("connection closed")
            got += chunk.count(b"\n")  # one per reply line; a byte is never split
        done += batch
    dt = time.perf_counter() - t0
    s.close()
    return done / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    a = ap.parse_args()
    print("command:", " ".join(sys.argv))
    work = tempfile.mkdtemp(prefix="fkv-txbench-")
    fport, rport = free_port(), free_port()
    fkv = subprocess.Popen(["taskset", "-c", "1", os.path.join(a.build, "server/featurekv-server"), "--port",
                            str(fport), "--shards", "2", "--save", "", "--dir", work, "--logfile", work + "/fkv.log"])
    red = subprocess.Popen(["taskset", "-c", "1", "redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                            "--save", "", "--appendonly", "no", "--dir", work], stdout=subprocess.DEVNULL)
    try:
        wait_ping(fport)
        wait_ping(rport)
        one = [b"k"] * 10
        spread = [b"key:%d" % i for i in range(10)]
        print("groups of 10 INCR per second (one client, %d groups per batch)" % a.batch)
        print("%-28s %12s %12s %8s" % ("", "featurekv", "redis", "ratio"))
        for name, keys, tx in (("pipelined, one key", one, False), ("MULTI/EXEC, one key", one, True),
                               ("pipelined, 10 keys", spread, False), ("MULTI/EXEC, 10 keys", spread, True)):
            f = run(fport, keys, tx, a.groups, a.batch)
            r = run(rport, keys, tx, a.groups, a.batch)
            print("%-28s %12.0f %12.0f %8.2f" % (name, f, r, f / r))
    finally:
        for p in (fkv, red):
            p.terminate()
            p.wait(timeout=60)


if __name__ == "__main__":
    main()
