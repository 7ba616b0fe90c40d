"""Helpers shared by the Python benchmarks (run with /usr/bin/python3)."""
import csv
import os
import io
import random
import socket
import subprocess
import sys
import time

import redis  # Debian's python3-redis


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_ping(port, deadline_s=120):
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            if redis.Redis(port=port).ping():
                return
        except (redis.ConnectionError, redis.BusyLoadingError):
            time.sleep(0.005)
    sys.exit(f"server on {port} did not answer")


def materialize(f, r):
    """Copies every featurekv entity's features (FGET) into a Redis hash of the
    same key, as Feast's Redis online store would hold them. Returns the keys."""
    keys = list(f.scan_iter(count=10000))
    p_f, p_r = f.pipeline(transaction=False), r.pipeline(transaction=False)
    for i in range(0, len(keys), 1000):
        chunk = keys[i:i + 1000]
        for k in chunk:
            p_f.execute_command("FGET", k)
        for k, flat in zip(chunk, p_f.execute()):
            m = {}
            for j in range(0, len(flat), 2):
                v = flat[j + 1]
                if isinstance(v, list):
                    v = ",".join(x.decode() for x in v)
                m[flat[j]] = "" if v is None else v
            p_r.hset(k, mapping=m)
        p_r.execute()
    return keys


def write_demo_events(path, users, events, products, seed=7):
    """Demo-registry events as JSON lines for featurekv-load: every user at
    least once, then random ones, in the last 50 minutes. User ids are
    zero-padded to 12 digits so that redis-benchmark's __rand_int__ names
    real entities."""
    rng = random.Random(seed)
    now = int(time.time())
    actions = ["click", "view", "view", "click", "add_to_cart", "purchase"]
    with open(path, "w") as out:
        for i in range(events):
            u = i if i < users else rng.randrange(users)
            out.write('{"user_id":"%012d","product_id":%d,"action":"%s","timestamp":%d}\n' % (
                u, rng.randrange(products), rng.choice(actions), now - rng.randrange(3000)))


def p99_of(port, cmd, users, n, clients=20):
    """redis-benchmark running `cmd` (with __rand_int__ below `users`) n
    times from `clients` clients: (p99 latency ms, requests/s)."""
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-c", str(clients), "-n", str(n), "-r", str(users),
                          "--csv", *cmd], capture_output=True, text=True, timeout=600).stdout
    rows = list(csv.reader(io.StringIO(out)))
    head, row = rows[0], rows[1]
    return float(row[head.index("p99_latency_ms")]), float(row[head.index("rps")])


def cpu_seconds(pid):
    """User + system CPU seconds used so far by process `pid` (/proc)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_benchmark(port, cmd, n, pipeline, clients=50, keyspace=100000, cpu="0", auth=()):
    """redis-benchmark (pinned to `cpu`) running `cmd` n times at pipeline
    depth `pipeline`: (requests/s, p99 ms). auth: ("--user", u, "-a", p)."""
    out = subprocess.run(["taskset", "-c", cpu, "redis-benchmark", "-p", str(port), "-c", str(clients), "-n", str(n),
                          "-r", str(keyspace), "-P", str(pipeline), *auth, "--csv", *cmd],
                         capture_output=True, text=True, timeout=900).stdout
    rows = list(csv.reader(io.StringIO(out)))
    head, row = rows[0], rows[1]
    # Counted from the end: a command with commas (JSON) spreads its name
    # over several columns.
    back = len(head) - len(row)
    return float(row[head.index("rps") - back]), float(row[head.index("p99_latency_ms") - back])


def demo_arguments(ap, root):
    """The options of the benchmarks that load demo-registry users: --users,
    --events, --products, --shards, --build and --quick (the caller applies
    --quick: 100k users, 300k events)."""
    ap.add_argument("--users", type=int, default=1000000)
    ap.add_argument("--events", type=int, default=3000000)
    ap.add_argument("--products", type=int, default=10000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--build", default=os.path.join(root, "build"))
    ap.add_argument("--quick", action="store_true", help="100k users, 300k events")
    return ap
