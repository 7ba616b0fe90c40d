"""Helpers shared by the Python benchmarks (run with /usr/bin/python3)."""
import socket
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
