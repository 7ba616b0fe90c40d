#!/usr/bin/python3
"""Encryption at rest: what AES-256-GCM costs a snapshot save and load.

featurekv holding U entities of the demo registry (loaded with
featurekv-load) saves the same data alternately plain and encrypted
(CONFIG SET snapshot-encryption-key-file), R rounds each, and loads each
file by restarting; redis-server holding the same values (one hash per
entity) saves with BGSAVE in the same run, for scale. Reports medians, the
encrypted/plain ratios and file sizes.

usage: bench/encryption.py [--users 1000000] [--events 3000000] [--products 10000]
       [--shards 2] [--build build] [--quick] [--rounds 3]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import redis  # Debian's python3-redis (/usr/bin/python3)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import demo_arguments, free_port, materialize, wait_ping, write_demo_events  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = demo_arguments(argparse.ArgumentParser(), ROOT)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if a.quick:
        a.users, a.events = 100000, 300000
    server = os.path.join(a.build, "server/featurekv-server")
    loader = os.path.join(a.build, "tools/featurekv-load")
    work = tempfile.mkdtemp(prefix="fkv-encbench-")
    key = os.path.join(work, "snapshot.key")
    with open(key, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    print("command:", " ".join(sys.argv))
    fport, rport = free_port(), free_port()
    fkv_args = [server, "--port", str(fport), "--shards", str(a.shards), "--save", "", "--dir", work,
                "--registry", os.path.join(ROOT, "conf/features.yaml"), "--logfile", work + "/fkv.log",
                "--snapshot-encryption-previous-key-file", key]  # every restart can read both kinds
    red_args = ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", work, "--dbfilename", "dump.rdb"]
    procs = {"fkv": subprocess.Popen(fkv_args), "redis": subprocess.Popen(red_args, stdout=subprocess.DEVNULL)}
    snap = os.path.join(work, "featurekv.snap")
    try:
        wait_ping(fport)
        wait_ping(rport)
        f, r = redis.Redis(port=fport), redis.Redis(port=rport)
        path = os.path.join(work, "events.jsonl")
        write_demo_events(path, a.users, a.events, a.products)
        subprocess.run([loader, "--port", str(fport), path], check=True, stderr=subprocess.DEVNULL)
        n = len(materialize(f, r))
        print(f"entities: {n:,} (users {a.users:,}, products up to {a.products:,}), {a.rounds} rounds\n")

        save = {"plain": [], "encrypted": []}
        load = {"plain": [], "encrypted": []}
        size = {}
        redis_save = []
        for _ in range(a.rounds):
            for mode in ("plain", "encrypted"):
                f.config_set("snapshot-encryption-key-file", key if mode == "encrypted" else "")
                t0 = time.time()
                f.save()
                save[mode].append(time.time() - t0)
                size[mode] = os.path.getsize(snap)
                # Load: restart on this file; the server's own load time.
                procs["fkv"].terminate()
                procs["fkv"].wait(timeout=120)
                procs["fkv"] = subprocess.Popen(fkv_args)
                wait_ping(fport)
                f = redis.Redis(port=fport)
                load[mode].append(int(f.info("persistence")["snapshot_load_ms"]) / 1000)
                assert f.dbsize() == n, (f.dbsize(), n)
            t0 = time.time()
            r.bgsave()
            time.sleep(0.01)
            while int(r.info("persistence")["rdb_bgsave_in_progress"]):
                time.sleep(0.005)
            redis_save.append(time.time() - t0)
        med = {k: {m: statistics.median(v[m]) for m in v} for k, v in (("save", save), ("load", load))}
        rs = statistics.median(redis_save)
        print("median seconds          plain   encrypted   encrypted/plain   redis BGSAVE")
        print(f"  save (SAVE, durable) {med['save']['plain']:8.3f}  {med['save']['encrypted']:9.3f}   "
              f"{med['save']['encrypted'] / med['save']['plain']:14.2f}   {rs:11.3f}")
        print(f"  load (snapshot_load) {med['load']['plain']:8.3f}  {med['load']['encrypted']:9.3f}   "
              f"{med['load']['encrypted'] / max(med['load']['plain'], 1e-9):14.2f}")
        print(f"  file MB              {size['plain'] / 1e6:8.1f}  {size['encrypted'] / 1e6:9.1f}   "
              f"{size['encrypted'] / size['plain']:14.4f}   {os.path.getsize(os.path.join(work, 'dump.rdb')) / 1e6:11.1f}")
        print(f"  encrypted save MB/s  {size['encrypted'] / 1e6 / med['save']['encrypted']:8.0f}")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
