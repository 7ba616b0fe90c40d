#!/usr/bin/python3
"""TLS through real clients: redis-cli --tls, redis-py ssl=True and Python's
ssl module against featurekv's tls-port, with certificates made by openssl
in the test.

Run:  /usr/bin/python3 test_tls.py SERVER_BINARY [unittest args]

Client certificates (tls-auth-clients yes / optional / no), a plain TCP
client on the TLS port, a client certificate from another CA, an expired
one and none at all are refused; the plain port serves beside the TLS one;
a handshake that stalls or sends garbage does not block other clients;
CONFIG SET tls-cert-file reloads the certificate for new connections (a bad
one changes nothing); `port 0` with a tls-port turns plain TCP off.
(hiredis is not tested over TLS: Debian 12's libhiredis 0.14 has no SSL.)
"""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fkv_testlib import RawClient, RespError, ServerProcess, free_port, wait_until  # noqa: E402

SERVER_BINARY = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 and not sys.argv[1].startswith("-")
                                else os.path.join(HERE, "..", "..", "build", "server", "featurekv-server"))
CERTS = None  # the module's certificate directory


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_certs(d):
    """ca / other-ca; server (CN localhost, SAN 127.0.0.1), server2 (CN
    localhost-2), client, other-client (signed by other-ca), expired-client."""
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca + ".key", "-out", ca + ".pem",
                "-days", "30", "-subj", "/CN=featurekv test " + ca, cwd=d)
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def leaf(name, cn, ca="ca", ext=True):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", "/CN=" + cn, cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key", "-CAcreateserial",
                "-out", name + ".pem", "-days", "30", *(["-extfile", "san.ext"] if ext else []), cwd=d)

    leaf("server", "localhost")
    leaf("server2", "localhost-2")
    leaf("client", "client", ext=False)
    leaf("other-client", "other", ca="other-ca", ext=False)
    # An expired client certificate: `openssl ca` takes explicit dates.
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write("[ca]\ndefault_ca=d\n[d]\ndatabase=%s/index.txt\nnew_certs_dir=%s\nserial=%s/serial\n"
                "default_md=sha256\npolicy=p\n[p]\ncommonName=supplied\n" % (d, d, d))
    open(os.path.join(d, "index.txt"), "w").close()
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("1000\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "expired.key", "-out", "expired.csr",
            "-subj", "/CN=expired", cwd=d)
    openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-in", "expired.csr",
            "-out", "expired.pem", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-notext", cwd=d)


def cert(name):
    return os.path.join(CERTS, name)


def setUpModule():
    global CERTS
    CERTS = tempfile.mkdtemp(prefix="fkv-tls-certs-")
    make_certs(CERTS)


def tearDownModule():
    shutil.rmtree(CERTS, ignore_errors=True)


def tls_directives(port, auth="yes", server="server"):
    return [("tls-port", port), ("tls-cert-file", cert(server + ".pem")), ("tls-key-file", cert(server + ".key")),
            ("tls-ca-cert-file", cert("ca.pem")), ("tls-auth-clients", auth), ("save", "")]


def start_tls_server(**kw):
    """featurekv with a TLS listener and a plain one, on free ports (retried
    if taken meanwhile; `port 0` with a tls-port would turn plain TCP off)."""
    for _ in range(5):
        port = free_port()
        try:
            directives = tls_directives(port, **kw) + [("port", free_port())]
            return ServerProcess(SERVER_BINARY, directives=directives).start(), port
        except Exception as e:  # the port was taken meanwhile
            last = e
    raise last


def tls_client(port, client="client", timeout=10):
    """A RawClient over TLS (verifying the server against ca.pem)."""
    ctx = ssl.create_default_context(cafile=cert("ca.pem"))
    if client:
        ctx.load_cert_chain(cert(client + ".pem"), cert(client + ".key"))
    c = RawClient(port, timeout=timeout)
    c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
    return c


class TlsTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fkv, cls.tls_port = start_tls_server()

    @classmethod
    def tearDownClass(cls):
        cls.fkv.stop()

    def tearDown(self):
        self.assertTrue(self.fkv.alive(), "featurekv died:\n" + self.fkv.diagnostics())

    def refused(self, client):
        """A TLS client with this certificate (None: none) gets no service."""
        try:
            c = tls_client(self.tls_port, client=client)
        except (ssl.SSLError, ConnectionError, OSError):
            return True
        try:  # TLS 1.3: the server's refusal of the certificate arrives after the client's handshake
            return c.command("PING") != "PONG"
        except (ssl.SSLError, ConnectionError, OSError):
            return True
        finally:
            c.close()

    def test_redis_cli_over_tls(self):
        out = subprocess.run(["redis-cli", "-p", str(self.tls_port), "--tls", "--cacert", cert("ca.pem"),
                              "--cert", cert("client.pem"), "--key", cert("client.key"), "SET", "tls:k", "v"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.stdout.strip(), "OK", out.stderr)
        out = subprocess.run(["redis-cli", "-p", str(self.tls_port), "--tls", "--cacert", cert("ca.pem"),
                              "--cert", cert("client.pem"), "--key", cert("client.key"), "GET", "tls:k"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.stdout.strip(), "v", out.stderr)

    def test_redis_py_ssl(self):
        import redis
        r = redis.Redis(host="127.0.0.1", port=self.tls_port, ssl=True, ssl_ca_certs=cert("ca.pem"),
                        ssl_certfile=cert("client.pem"), ssl_keyfile=cert("client.key"), decode_responses=True,
                        socket_timeout=10)
        self.assertTrue(r.set("tls:py", "1"))
        p = r.pipeline(transaction=False)
        for i in range(1000):
            p.incr("tls:count")
        self.assertEqual(p.execute()[-1], 1000)
        big = "x" * 300000  # several TLS records each way
        self.assertTrue(r.set("tls:big", big))
        self.assertEqual(r.get("tls:big"), big)

    def test_plain_port_beside(self):
        with RawClient(self.fkv.port) as c:
            self.assertEqual(c.command("PING"), "PONG")
            self.assertEqual(c.command("CONFIG", "GET", "tls-port"), ["tls-port", str(self.tls_port)])

    def test_refused_clients(self):
        self.assertTrue(self.refused(None), "no client certificate with tls-auth-clients yes")
        self.assertTrue(self.refused("other-client"), "a client certificate from another CA")
        self.assertTrue(self.refused("expired"), "an expired client certificate")
        self.assertFalse(self.refused("client"))
        # A client that does not trust the server's CA refuses it.
        ctx = ssl.create_default_context(cafile=cert("other-ca.pem"))
        with self.assertRaises(ssl.SSLCertVerificationError):
            with socket.create_connection(("127.0.0.1", self.tls_port), timeout=10) as s:
                ctx.wrap_socket(s, server_hostname="localhost")
        # Plain RESP on the TLS port: the handshake fails, the connection closes.
        with RawClient(self.tls_port, timeout=10) as c:
            c.send("PING\r\n")
            data = c.read_until_closed(timeout=10)
            self.assertNotIn(b"PONG", data)
        self.assertIn("TLS handshake with client", self.fkv.log_text())

    def test_stalled_or_garbage_handshakes_do_not_block_others(self):
        stalled = [socket.create_connection(("127.0.0.1", self.tls_port), timeout=10) for _ in range(5)]
        garbage = socket.create_connection(("127.0.0.1", self.tls_port), timeout=10)
        try:
            garbage.sendall(os.urandom(4096))
            t0 = time.monotonic()
            with tls_client(self.tls_port) as c:
                self.assertEqual(c.command("PING"), "PONG")
            with RawClient(self.fkv.port) as c:
                self.assertEqual(c.command("PING"), "PONG")
            self.assertLess(time.monotonic() - t0, 5)
            garbage.settimeout(10)
            end = time.monotonic() + 10
            while time.monotonic() < end:  # the server closes the garbage sender
                try:
                    if garbage.recv(65536) == b"":
                        break
                except ConnectionResetError:
                    break
            else:
                self.fail("the garbage handshake was not closed")
        finally:
            for s in stalled + [garbage]:
                s.close()

    def test_certificate_reload_by_config_set(self):
        with RawClient(self.fkv.port) as admin:
            def served_cn():
                with tls_client(self.tls_port) as c:
                    self.assertEqual(c.command("PING"), "PONG")
                    return dict(x[0] for x in c.sock.getpeercert()["subject"])["commonName"]
            self.assertEqual(served_cn(), "localhost")
            # A key that does not match the certificate: refused, nothing changes.
            got = admin.command("CONFIG", "SET", "tls-cert-file", cert("server2.pem"))
            self.assertEqual(got, RespError("ERR CONFIG SET failed (possibly related to argument 'tls-cert-file') - "
                                            "Unable to update TLS configuration. Check server logs."))
            self.assertEqual(admin.command("CONFIG", "GET", "tls-cert-file")[1], cert("server.pem"))
            self.assertEqual(served_cn(), "localhost")
            # The other directives of a refused call are not changed either.
            slow = admin.command("CONFIG", "GET", "slowlog-max-len")[1]
            got = admin.command("CONFIG", "SET", "slowlog-max-len", "7", "TLS-CERT-FILE", cert("server2.pem"))
            self.assertIsInstance(got, RespError)
            self.assertEqual(admin.command("CONFIG", "GET", "slowlog-max-len")[1], slow)
            self.assertEqual(admin.command("CONFIG", "GET", "tls-cert-file")[1], cert("server.pem"))
            self.assertEqual(admin.command("CONFIG", "SET", "tls-cert-file", cert("server2.pem"), "tls-key-file",
                                           cert("server2.key")), "OK")
            try:
                self.assertEqual(served_cn(), "localhost-2")
            finally:
                self.assertEqual(admin.command("CONFIG", "SET", "tls-cert-file", cert("server.pem"), "tls-key-file",
                                               cert("server.key")), "OK")


class TlsModeTests(unittest.TestCase):
    def test_optional_and_no_client_auth(self):
        for auth, without_cert in (("optional", True), ("no", True)):
            fkv, port = start_tls_server(auth=auth)
            try:
                with tls_client(port, client=None) as c:
                    self.assertEqual(c.command("PING"), "PONG", auth)
                if auth == "optional":  # a certificate it cannot verify is still refused
                    with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
                        with tls_client(port, client="other-client") as c:
                            c.command("PING")
            finally:
                fkv.stop()

    def test_port_0_turns_plain_tcp_off(self):
        tls_port = free_port()
        d = tempfile.mkdtemp(prefix="fkv-tls-only-")
        log = os.path.join(d, "server.log")
        args = [SERVER_BINARY, "--port", "0", "--logfile", log, "--dir", d]
        for k, v in tls_directives(tls_port):
            args += ["--" + k, str(v)]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def text():
                if not os.path.exists(log):
                    return ""
                with open(log) as f:
                    return f.read()

            def ready():
                if proc.poll() is not None:
                    raise AssertionError("exited with %s" % proc.returncode)
                return "Ready to accept connections tls" in text()
            wait_until(ready, timeout=10, what="the tls ready line")
            text = text()
            self.assertNotIn("Ready to accept connections tcp", text)
            with tls_client(tls_port) as c:
                self.assertEqual(c.command("PING"), "PONG")
        finally:
            proc.terminate()
            proc.wait(10)
            shutil.rmtree(d, ignore_errors=True)

    def test_bad_tls_settings_refuse_to_start(self):
        port = free_port()
        for directives, why in [
            ([("tls-port", port)], "tls-cert-file and tls-key-file are required"),
            (tls_directives(port) + [("tls-cert-file", cert("nosuch.pem"))], "tls-cert-file"),
            (tls_directives(port) + [("tls-protocols", "SSLv3")], "tls-protocols"),
        ]:
            fkv = ServerProcess(SERVER_BINARY, directives=directives)
            with self.assertRaises(Exception) as e:
                fkv.start()
            self.assertIn(why, str(e.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)
