#!/usr/bin/python3
"""Scrape cost of /metrics: featurekv with a registry of V views on one
topic of P partitions (librdkafka's mock cluster, featurekv-mock-kafka),
some events applied and commands run; then N scrapes back to back (time
per scrape, body size), and FGET p99 (redis-benchmark, 20 clients) idle
against while a client scrapes /metrics every --interval seconds (0: back
to back). The server and every thread of it are pinned to one CPU,
redis-benchmark and the scraper to the other.

usage: bench/metrics_scrape.py [--views 100] [--partitions 256] [--scrapes 200]
       [--interval 0.1] [--server build/server/featurekv-server]
"""
import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time

import redis  # Debian's python3-redis (/usr/bin/python3)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port, wait_ping  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def registry(views):
    lines = ["sources:", "  ev: {topic: ev, format: json, timestamp: {field: timestamp, unit: s}}",
             "entities:", "  user: {key: user_id}", "views:"]
    for v in range(views):
        lines += ["  v%d:" % v, "    entity: user", "    source: ev", "    ttl: 1d", "    features:",
                  "      c%d: {agg: count, windows: [1m, 1h]}" % v,
                  "      a%d: {agg: last, field: action}" % v]
    return "\n".join(lines) + "\n"


def scrape(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t0 = time.perf_counter()
    c.request("GET", "/metrics")
    body = c.getresponse().read()
    dt = time.perf_counter() - t0
    c.close()
    return dt, body


def fget_p99(port, requests):
    out = subprocess.run(["taskset", "-c", "0", "redis-benchmark", "-p", str(port), "-c", "20", "-n", str(requests),
                          "-r", "1000", "--csv", "FGET", "user:__rand_int__", "c0_1h", "c1_1m", "a2"],
                         capture_output=True, text=True, timeout=600).stdout.splitlines()
    row = [x.strip('"') for x in out[1].split('","')]
    return float(row[6])  # rps, avg, min, p50, p95, p99, max: p99 ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--views", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=256)
    ap.add_argument("--scrapes", type=int, default=200)
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--server", default=os.path.join(ROOT, "build/server/featurekv-server"))
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="fkv-scrape-")
    reg = os.path.join(work, "views.yaml")
    with open(reg, "w") as f:
        f.write(registry(a.views))
    mock = subprocess.Popen([os.path.join(ROOT, "build/tools/featurekv-mock-kafka"), "--partitions",
                             str(a.partitions), "--topic", "ev"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    bootstrap = mock.stdout.readline().strip()
    port, mport = free_port(), free_port()
    srv = subprocess.Popen(["taskset", "-c", "1", a.server, "--port", str(port), "--shards", "1", "--save", "",
                            "--dir", work, "--registry", reg, "--kafka-brokers", bootstrap, "--metrics-port",
                            str(mport), "--logfile", work + "/fkv.log"])
    try:
        wait_ping(port)
        subprocess.run([os.path.join(ROOT, "build/tools/featurekv-produce"), "--brokers", bootstrap, "--topic", "ev",
                        "--count", "20000", "--rate", "0", "--users", "1000", "--products", "100"],
                       check=True, capture_output=True, timeout=300)
        r = redis.Redis(port=port)
        deadline = time.time() + 120
        while int(r.info("ingest")["events_applied"]) < 20000 and time.time() < deadline:
            time.sleep(0.05)
        for cmd in (["GET", "x"], ["SET", "x", "1"], ["FGET", "user:1"], ["INFO"], ["DBSIZE"], ["PING"]):
            r.execute_command(*cmd)
        times, size = [], 0
        for _ in range(a.scrapes):
            dt, body = scrape(mport)
            times.append(dt)
            size = len(body)
        times.sort()
        lines = body.count(b"\n")
        print("views %d, partitions %d: /metrics %d bytes, %d lines" % (a.views, a.partitions, size, lines))
        print("scrape time ms: p50 %.2f  p99 %.2f  max %.2f  (%d scrapes back to back)" % (
            1000 * times[len(times) // 2], 1000 * times[int(len(times) * 0.99) - 1], 1000 * times[-1], len(times)))
        idle = fget_p99(port, a.requests)
        stop = threading.Event()
        count = [0]

        def loop():
            while not stop.is_set():
                scrape(mport)
                count[0] += 1
                if a.interval > 0:
                    stop.wait(a.interval)
        t = threading.Thread(target=loop)
        t.start()
        try:
            busy = fget_p99(port, a.requests)
        finally:
            stop.set()
            t.join()
        print("FGET p99 ms (20 clients, %d requests): idle %.3f, while scraping every %.3f s %.3f (%d scrapes): %.2fx"
              % (a.requests, idle, a.interval, busy, count[0], busy / idle if idle else 0))
    finally:
        srv.terminate()
        srv.wait(30)
        mock.kill()
        mock.wait(30)


if __name__ == "__main__":
    main()
