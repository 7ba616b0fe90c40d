#!/usr/bin/python3
"""Memory per entity: featurekv holding the demo views after N clickstream
events over U users, against redis-server holding the same materialized
feature values as one hash per entity (what Feast's Redis online store
keeps). Both servers run in this process's care on loopback; prints
used_memory deltas and bytes per entity.

usage: bench/memory_per_entity.py [--users 100000] [--events 1000000]
       [--products 10000] [--server build/server/featurekv-server]
"""
import argparse, os, random, subprocess, sys, tempfile, time

import redis  # Debian's python3-redis (/usr/bin/python3)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port, materialize, wait_ping  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def used(r):
    return int(r.info("memory")["used_memory"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100000)
    ap.add_argument("--events", type=int, default=1000000)
    ap.add_argument("--products", type=int, default=10000)
    ap.add_argument("--server", default=os.path.join(ROOT, "build/server/featurekv-server"))
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="fkv-mem-")
    fport, rport = free_port(), free_port()
    fkv = subprocess.Popen([a.server, "--port", str(fport), "--shards", "1", "--save", "", "--dir", work, "--registry",
                            os.path.join(ROOT, "conf/features.yaml"), "--logfile", work + "/fkv.log"])
    red = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", work], stdout=subprocess.DEVNULL)
    try:
        wait_ping(fport)
        wait_ping(rport)
        f, r = redis.Redis(port=fport), redis.Redis(port=rport)
        f0, r0 = used(f), used(r)
        rng = random.Random(7)
        now = int(time.time())
        actions = ["click", "view", "view", "click", "add_to_cart", "purchase"]
        batch, pipe, sent = [], f.pipeline(transaction=False), 0
        t0 = time.time()
        for i in range(a.events):
            batch.append('{"user_id":%d,"product_id":%d,"action":"%s","timestamp":%d}' % (
                rng.randrange(a.users), rng.randrange(a.products), rng.choice(actions), now - rng.randrange(3000)))
            if len(batch) == 200:
                pipe.execute_command("FEVENT", "user_events", *batch)
                batch = []
                sent += 1
                if sent % 50 == 0:
                    pipe.execute()
        if batch:
            pipe.execute_command("FEVENT", "user_events", *batch)
        pipe.execute()
        load_s = time.time() - t0
        f1 = used(f)
        keys = materialize(f, r)  # the same values, one Redis hash per entity
        r1 = used(r)
        n = len(keys)
        print(f"events={a.events} users={a.users} products={a.products} entities={n} "
              f"(load {a.events / load_s:,.0f} events/s through FEVENT, one client)")
        print(f"featurekv  used_memory delta {(f1 - f0) / 1e6:8.1f} MB  {(f1 - f0) / n:7.1f} bytes/entity")
        print(f"redis      used_memory delta {(r1 - r0) / 1e6:8.1f} MB  {(r1 - r0) / n:7.1f} bytes/entity (materialized hashes)")
        print(f"ratio featurekv/redis: {(f1 - f0) / max(1, r1 - r0):.2f}")
    finally:
        for p in (fkv, red):
            p.terminate()
            p.wait(timeout=10)


if __name__ == "__main__":
    main()
