#!/usr/bin/python3
"""Snapshot save and load: featurekv holding U entities of the demo
registry (loaded with featurekv-load) against redis-server holding the same
materialized feature values as one hash per entity, in the same run:

- save: featurekv SAVE (durable; no fork) vs Redis BGSAVE (fork), wall time,
  file bytes, MB/s, bytes per entity;
- load: restart time to the first PING answered, and featurekv's own
  snapshot_load_ms;
- FGET p99 (redis-benchmark, 20 clients) idle vs while snapshots are written
  back to back, beside Redis's HMGET p99 idle vs during BGSAVE.

User ids are zero-padded to 12 digits so that redis-benchmark's
__rand_int__ names real entities.

usage: bench/snapshot.py [--users 1000000] [--events 3000000] [--products 10000]
       [--shards 2] [--build build] [--quick]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import redis  # Debian's python3-redis (/usr/bin/python3)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import demo_arguments, free_port, materialize, p99_of, wait_ping, write_demo_events  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURES = ["clicks_1h", "purchases_24h", "products_1h"]


def main():
    ap = demo_arguments(argparse.ArgumentParser(), ROOT)
    a = ap.parse_args()
    if a.quick:
        a.users, a.events = 100000, 300000
    server = os.path.join(a.build, "server/featurekv-server")
    loader = os.path.join(a.build, "tools/featurekv-load")
    work = tempfile.mkdtemp(prefix="fkv-snapbench-")
    print("command:", " ".join(sys.argv))
    fport, rport = free_port(), free_port()
    fkv_args = [server, "--port", str(fport), "--shards", str(a.shards), "--save", "", "--dir", work,
                "--registry", os.path.join(ROOT, "conf/features.yaml"), "--logfile", work + "/fkv.log"]
    red_args = ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", work, "--dbfilename", "dump.rdb"]
    procs = {"fkv": subprocess.Popen(fkv_args), "redis": subprocess.Popen(red_args, stdout=subprocess.DEVNULL)}
    try:
        wait_ping(fport)
        wait_ping(rport)
        f, r = redis.Redis(port=fport), redis.Redis(port=rport)
        path = os.path.join(work, "events.jsonl")
        write_demo_events(path, a.users, a.events, a.products)
        t0 = time.time()
        subprocess.run([loader, "--port", str(fport), path], check=True, stderr=subprocess.DEVNULL)
        print(f"loaded {a.events:,} events in {time.time() - t0:.1f} s")
        # The same feature values in Redis, one hash per entity.
        keys = materialize(f, r)  # the same values, one Redis hash per entity
        n = len(keys)
        print(f"entities: {n:,} (users {a.users:,}, products up to {a.products:,})\n")

        # Save.
        t0 = time.time()
        f.save()
        f_save = time.time() - t0
        pf = f.info("persistence")
        f_bytes = int(pf["snapshot_last_bytes"])
        t0 = time.time()
        r.bgsave()
        time.sleep(0.01)
        while int(r.info("persistence")["rdb_bgsave_in_progress"]):
            time.sleep(0.005)
        r_save = time.time() - t0
        r_bytes = os.path.getsize(os.path.join(work, "dump.rdb"))
        print("save                      featurekv (SAVE, durable)    redis (BGSAVE, fork)")
        print(f"  seconds                  {f_save:10.2f}                   {r_save:10.2f}")
        print(f"  file MB                  {f_bytes / 1e6:10.1f}                   {r_bytes / 1e6:10.1f}")
        print(f"  MB/s                     {f_bytes / 1e6 / f_save:10.0f}                   {r_bytes / 1e6 / r_save:10.0f}")
        print(f"  bytes/entity             {f_bytes / n:10.0f}                   {r_bytes / n:10.0f}")

        # FGET / HMGET p99: idle, then while snapshots run back to back.
        nreq = min(200000, max(50000, a.users // 5))
        f_idle = p99_of(fport, ["FGET", "user:__rand_int__", *FEATURES], a.users, nreq)
        r_idle = p99_of(rport, ["HMGET", "user:__rand_int__", *FEATURES], a.users, nreq)
        stop = threading.Event()
        saves = [0, 0]

        def keep_saving(client, idx, is_redis):
            c = redis.Redis(port=client)
            while not stop.is_set():
                try:
                    c.bgsave()
                except redis.ResponseError:
                    pass
                while not stop.is_set() and int(c.info("persistence")["rdb_bgsave_in_progress"]):
                    time.sleep(0.002)
                saves[idx] += 1

        for port, idx, is_redis, cmd in ((fport, 0, False, "FGET"), (rport, 1, True, "HMGET")):
            t = threading.Thread(target=keep_saving, args=(port, idx, is_redis))
            t.start()
            busy = p99_of(port, [cmd, "user:__rand_int__", *FEATURES], a.users, nreq)
            stop.set()
            t.join()
            stop.clear()
            if idx == 0:
                f_busy = busy
            else:
                r_busy = busy
        print(f"\nlatency p99 ms ({nreq:,} requests, 20 clients)  idle    during snapshots   ratio")
        print(f"  featurekv FGET 3 features   {f_idle[0]:8.3f}   {f_busy[0]:8.3f} ({saves[0]} saves)  "
              f"{f_busy[0] / max(f_idle[0], 1e-9):5.2f}")
        print(f"  redis HMGET 3 fields        {r_idle[0]:8.3f}   {r_busy[0]:8.3f} ({saves[1]} saves)  "
              f"{r_busy[0] / max(r_idle[0], 1e-9):5.2f}")

        # Load: restart each and time the first PING answered.
        f.save()
        for name in ("fkv", "redis"):
            procs[name].terminate()
            procs[name].wait(timeout=120)
        t0 = time.time()
        procs["fkv"] = subprocess.Popen(fkv_args)
        wait_ping(fport)
        f_load = time.time() - t0
        f = redis.Redis(port=fport)
        load_ms = int(f.info("persistence")["snapshot_load_ms"])
        t0 = time.time()
        procs["redis"] = subprocess.Popen(red_args, stdout=subprocess.DEVNULL)
        wait_ping(rport)
        r_load = time.time() - t0
        print("\nload (restart to first PING)   featurekv          redis")
        print(f"  seconds                      {f_load:8.2f}           {r_load:8.2f}")
        print(f"  featurekv snapshot_load_ms   {load_ms:8d}")
        print(f"  entities after load          {f.dbsize():8,}           {redis.Redis(port=rport).dbsize():8,}")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
