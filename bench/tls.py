#!/usr/bin/python3
"""redis-benchmark --tls: GET and SET at -P1 and -P16 against featurekv
(1 shard) and redis-server with the same certificates (made here by
openssl), each pinned to CPU 1, redis-benchmark on CPU 0, alternating for
--rounds rounds. Prints requests/s and the featurekv / redis ratio
(target >= 1.0), and the same over plain TCP for reference.

usage: bench/tls.py [--requests 200000] [--rounds 3] [--build build]
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


def certs(d):
    def run(*a):
        subprocess.run(["openssl", *a], cwd=d, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=bench-ca")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr", "-subj",
            "/CN=" + name)
        run("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            name + ".pem", "-days", "2", "-extfile", "san.ext")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    a = ap.parse_args()
    print("command:", " ".join(sys.argv))
    work = tempfile.mkdtemp(prefix="fkv-tlsbench-")
    certs(work)
    c = lambda n: os.path.join(work, n)  # noqa: E731
    tls_server = ["--tls-cert-file", c("server.pem"), "--tls-key-file", c("server.key"), "--tls-ca-cert-file",
                  c("ca.pem")]
    tls_client = ("--tls", "--cacert", c("ca.pem"), "--cert", c("client.pem"), "--key", c("client.key"))
    fport, ftls, rport, rtls = free_port(), free_port(), free_port(), free_port()
    fkv = subprocess.Popen(["taskset", "-c", "1", os.path.join(a.build, "server/featurekv-server"), "--port",
                            str(fport), "--tls-port", str(ftls), "--shards", "1", "--save", "", "--dir", work,
                            "--logfile", c("fkv.log")] + tls_server)
    red = subprocess.Popen(["taskset", "-c", "1", "redis-server", "--port", str(rport), "--tls-port", str(rtls),
                            "--bind", "127.0.0.1", "--save", "", "--dir", work] + tls_server,
                           stdout=subprocess.DEVNULL)
    try:
        wait_ping(fport)
        wait_ping(rport)
        results = {}
        print("%-5s %-4s %3s %5s %14s %14s %7s" % ("link", "cmd", "P", "round", "featurekv rps", "redis rps", "ratio"))
        for r in range(a.rounds):
            for link, (fp, rp, extra) in (("tls", (ftls, rtls, tls_client)), ("tcp", (fport, rport, ()))):
                for cmd in (["GET", "key:__rand_int__"], ["SET", "key:__rand_int__", "v"]):
                    for p in (16, 1):
                        n = a.requests if p == 16 else a.requests // 4
                        order = [(fp, "f"), (rp, "r")] if r % 2 == 0 else [(rp, "r"), (fp, "f")]
                        got = {}
                        for port, who in order:
                            got[who] = redis_benchmark(port, cmd, n, p, auth=extra)[0]
                        ratio = got["f"] / got["r"]
                        results.setdefault((link, cmd[0], p), []).append(ratio)
                        print("%-5s %-4s %3d %5d %14.0f %14.0f %7.2f" % (link, cmd[0], p, r, got["f"], got["r"], ratio))
        for key, ratios in results.items():
            print("%-5s %-4s -P%-3d median featurekv/redis %.2f (%s)" % (key[0], key[1], key[2], statistics.median(ratios),
                                                                     " ".join("%.2f" % x for x in ratios)))
    finally:
        for proc in (fkv, red):
            proc.terminate()
            proc.wait(timeout=120)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
