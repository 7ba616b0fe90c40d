"""Helpers for featurekv's Python integration tests (stdlib only).

- ServerProcess: runs featurekv-server on an ephemeral port in a fresh temp
  dir, finds the port in its log, stops it with SIGTERM (asserting exit 0).
- RawClient: a plain socket client that sends bytes and reads whole RESP
  replies with a deadline, for protocol-level tests.
- decode_reply / encode_command: a minimal RESP2/RESP3 codec.
- wait_until: polls a condition with a deadline (no bare sleeps).

Everything talks to 127.0.0.1 only; every loop is bounded in count and time.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

READY_RE = re.compile(r"Ready to accept connections tcp 127\.0\.0\.1 port (\d+)")
HOST = "127.0.0.1"


class ServerError(Exception):
    pass


def wait_until(predicate, timeout=5.0, interval=0.01, what="condition"):
    """Calls predicate() until it returns a truthy value or `timeout` passes.

    Returns the truthy value; raises AssertionError with `what` on timeout.
    The interval grows up to 0.1 s, so a long wait does not spin."""
    deadline = time.monotonic() + timeout
    attempts = 0
    last = None
    while True:
        attempts += 1
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline or attempts > 100000:
            raise AssertionError("timed out after %.1fs waiting for %s (last value %r)" % (timeout, what, last))
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, 0.1)


class ServerProcess:
    """One featurekv-server process on an ephemeral port.

    directives: dict or list of (name, value) pairs, passed as
    `--name value`; a value may be a list/tuple of words, or None for a
    directive without value.
    """

    def __init__(self, binary, shards=1, directives=None, start_timeout=10.0, data_dir=None, extra_args=(),
                 preexec_fn=None, conf=None):
        """data_dir: the snapshot directory (`--dir`), kept across restarts;
        by default the process's own temporary directory. conf: a config
        file, passed first (the directives override it)."""
        self.binary = os.path.abspath(binary)
        self.conf = conf
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.preexec_fn = preexec_fn  # e.g. a file size limit for the disk-full tests
        self.shards = shards
        if directives is None:
            directives = []
        elif isinstance(directives, dict):
            directives = list(directives.items())
        self.directives = directives
        self.start_timeout = start_timeout
        self.proc = None
        self.port = None
        self.dir = None
        self.logfile = None
        self._stdout = None
        self._stderr = None

    # -- life cycle ---------------------------------------------------------

    def argv(self):
        args = [self.binary] + ([self.conf] if self.conf else [])
        args += ["--port", "0", "--logfile", self.logfile, "--shards", str(self.shards)]
        if self.data_dir is not None:
            args += ["--dir", self.data_dir]
        args += self.extra_args
        for name, value in self.directives:
            args.append("--" + name)
            if value is None:
                continue
            if isinstance(value, (list, tuple)):
                args.extend(str(v) for v in value)
            else:
                args.append(str(value))
        return args

    def start(self):
        if not os.access(self.binary, os.X_OK):
            raise ServerError("server binary not found or not executable: %s" % self.binary)
        self.dir = tempfile.mkdtemp(prefix="fkv-it-")
        self.logfile = os.path.join(self.dir, "server.log")
        self._stdout = open(os.path.join(self.dir, "stdout.txt"), "wb")
        self._stderr = open(os.path.join(self.dir, "stderr.txt"), "wb")
        self.proc = subprocess.Popen(self.argv(), cwd=self.dir, stdin=subprocess.DEVNULL,
                                     stdout=self._stdout, stderr=self._stderr, preexec_fn=self.preexec_fn)
        try:
            self.port = wait_until(self._ready_port, timeout=self.start_timeout, what="the server's ready line")
        except BaseException as e:
            diag = self.diagnostics()  # before kill() removes the files
            self.kill()
            raise ServerError("server did not become ready (%s):\n%s" % (str(e).split("\n")[0], diag))
        return self

    def _ready_port(self):
        if self.proc.poll() is not None:
            raise ServerError("server exited early with code %s:\n%s" % (self.proc.returncode, self.diagnostics()))
        m = READY_RE.search(self.log_text())
        return int(m.group(1)) if m else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout=10.0):
        """Waits for the process to exit; returns its exit code (None on timeout)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=10.0):
        """SIGTERM, wait up to `timeout` for exit, assert exit code 0.

        Kills the process (and raises) if it does not exit in time."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            rc = self.wait_exit(timeout)
            if rc is None:
                self.kill()
                raise AssertionError("server did not exit within %.0fs of SIGTERM:\n%s" % (timeout, self.diagnostics()))
            if rc != 0:
                raise AssertionError("server exited with code %d:\n%s" % (rc, self.diagnostics()))
        finally:
            self._cleanup()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.wait_exit(10.0)
        self._cleanup()

    def _cleanup(self):
        for f in (self._stdout, self._stderr):
            if f is not None and not f.closed:
                f.close()
        if self.dir and os.path.isdir(self.dir) and not os.environ.get("FKV_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- inspection ---------------------------------------------------------

    def _read(self, path, limit=1 << 20):
        try:
            with open(path, "rb") as f:
                data = f.read()
            return data[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""

    def log_text(self):
        return self._read(self.logfile) if self.logfile else ""

    def diagnostics(self):
        parts = ["argv: %s" % " ".join(self.argv() if self.logfile else [])]
        if self.dir:
            parts.append("--- server.log (tail) ---\n" + self._read(self.logfile, 4000))
            parts.append("--- stderr (tail) ---\n" + self._read(os.path.join(self.dir, "stderr.txt"), 4000))
        return "\n".join(parts)

    # -- clients ------------------------------------------------------------

    def redis(self, **kw):
        import redis  # python3-redis (Debian), only under /usr/bin/python3
        kw.setdefault("decode_responses", True)
        kw.setdefault("socket_timeout", 10)
        kw.setdefault("socket_connect_timeout", 5)
        return redis.Redis(host=HOST, port=self.port, **kw)

    def raw(self, timeout=5.0):
        return RawClient(self.port, timeout=timeout)

    def ping_ok(self, timeout=5.0):
        """True when PING on a fresh connection answers +PONG."""
        try:
            with RawClient(self.port, timeout=timeout) as c:
                return c.command("PING") == "PONG"
        except (OSError, ProtocolError, AssertionError):
            return False


# ---------------------------------------------------------------------------
# RESP codec


class ProtocolError(Exception):
    pass


class Incomplete(Exception):
    """The buffer does not yet hold a whole reply."""


class RespError(object):
    """An error reply (`-...` or `!...`). Compares equal to its text."""

    def __init__(self, message):
        self.message = message

    def __eq__(self, other):
        if isinstance(other, RespError):
            return self.message == other.message
        return self.message == other

    def __hash__(self):
        return hash(self.message)

    def __repr__(self):
        return "RespError(%r)" % self.message


class RespMap(dict):
    """A RESP3 map reply (`%`)."""


class RespSet(list):
    """A RESP3 set reply (`~`)."""


class RespPush(list):
    """A RESP3 push reply (`>`)."""


class Verbatim(str):
    """A RESP3 verbatim string (`=`); .format holds its 3-letter format."""

    def __new__(cls, text, fmt):
        s = str.__new__(cls, text)
        s.format = fmt
        return s


def encode_command(*args):
    """Encodes a command as a RESP multibulk; args may be str, bytes or numbers."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif not isinstance(a, (bytes, bytearray)):
            a = str(a).encode()
        out.append(b"$%d\r\n" % len(a))
        out.append(bytes(a))
        out.append(b"\r\n")
    return b"".join(out)


def _line(buf, pos):
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete()
    return buf[pos:end], end + 2


def _hashable(v):
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((_hashable(k), _hashable(x)) for k, x in v.items()))
    return v


def decode_reply(buf, pos=0, decode=True, depth=0):
    """Decodes one reply from buf[pos:]; returns (value, next_pos).

    Raises Incomplete when more bytes are needed, ProtocolError on bytes that
    are not RESP. Bulk strings become str (decode=True, UTF-8 with
    surrogateescape) or bytes. Both RESP2 nulls and RESP3 `_` become None:
    tests that care about the wire form check the raw bytes."""
    if depth > 64:
        raise ProtocolError("reply nested too deep")
    if pos >= len(buf):
        raise Incomplete()
    t = bytes(buf[pos:pos + 1])
    line, nxt = _line(buf, pos + 1)

    def text(b):
        return b.decode("utf-8", "surrogateescape") if decode else bytes(b)

    def count():
        try:
            return int(line)
        except ValueError:
            raise ProtocolError("bad length %r" % line)

    if t == b"+":
        return line.decode("utf-8", "surrogateescape"), nxt
    if t == b"-":
        return RespError(line.decode("utf-8", "surrogateescape")), nxt
    if t == b":":
        return count(), nxt
    if t == b"(":
        return int(line), nxt
    if t == b",":
        return float(line), nxt
    if t == b"#":
        if line not in (b"t", b"f"):
            raise ProtocolError("bad boolean %r" % line)
        return line == b"t", nxt
    if t == b"_":
        if line:
            raise ProtocolError("bad null %r" % line)
        return None, nxt
    if t in (b"$", b"=", b"!"):
        n = count()
        if n < 0:
            if t != b"$":
                raise ProtocolError("negative length for %r" % t)
            return None, nxt
        if len(buf) < nxt + n + 2:
            raise Incomplete()
        body = bytes(buf[nxt:nxt + n])
        if buf[nxt + n:nxt + n + 2] != b"\r\n":
            raise ProtocolError("bulk not terminated by CRLF")
        end = nxt + n + 2
        if t == b"$":
            return text(body), end
        if t == b"!":
            return RespError(body.decode("utf-8", "surrogateescape")), end
        if len(body) < 4 or body[3:4] != b":":
            raise ProtocolError("bad verbatim string")
        return Verbatim(body[4:].decode("utf-8", "surrogateescape"), body[:3].decode()), end
    if t in (b"*", b"~", b">"):
        n = count()
        if n < 0:
            if t != b"*":
                raise ProtocolError("negative length for %r" % t)
            return None, nxt
        items = []
        p = nxt
        for _ in range(n):
            v, p = decode_reply(buf, p, decode, depth + 1)
            items.append(v)
        cls = {b"*": list, b"~": RespSet, b">": RespPush}[t]
        return cls(items), p
    if t in (b"%", b"|"):
        n = count()
        if n < 0:
            raise ProtocolError("negative map length")
        m = RespMap()
        p = nxt
        for _ in range(n):
            k, p = decode_reply(buf, p, decode, depth + 1)
            v, p = decode_reply(buf, p, decode, depth + 1)
            m[_hashable(k)] = v
        if t == b"|":  # attributes precede the real reply
            return decode_reply(buf, p, decode, depth + 1)
        return m, p
    raise ProtocolError("unknown reply type %r at offset %d" % (t, pos))


def reply_length(buf, pos=0):
    """Number of bytes of the whole reply at buf[pos:] (Incomplete if partial)."""
    _, end = decode_reply(buf, pos, decode=False)
    return end - pos


# ---------------------------------------------------------------------------
# Raw socket client


class RawClient:
    """A blocking socket to the server with deadline-bounded reads."""

    def __init__(self, port, timeout=5.0, host=HOST):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        """Reads more bytes into buf; False at EOF. Raises on timeout."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline passed waiting for a reply (have %r)" % bytes(self.buf[:200]))
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_raw_reply(self, timeout=None):
        """Bytes of exactly one whole reply. Raises ConnectionError at EOF."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        for _ in range(1000000):
            try:
                n = reply_length(self.buf)
                raw = bytes(self.buf[:n])
                del self.buf[:n]
                return raw
            except Incomplete:
                pass
            if not self._fill(deadline):
                raise ConnectionError("connection closed by server (partial reply %r)" % bytes(self.buf[:200]))
        raise AssertionError("unreachable: read loop bound hit")

    def read_reply(self, timeout=None, decode=True):
        raw = self.read_raw_reply(timeout)
        value, _ = decode_reply(raw, 0, decode)
        return value

    def read_replies(self, n, timeout=None, decode=True):
        """n decoded replies, all within one deadline."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        out = []
        pos = 0
        for _ in range(n):
            for _ in range(10000000):
                try:
                    v, pos = decode_reply(self.buf, pos, decode)
                    out.append(v)
                    break
                except Incomplete:
                    if not self._fill(deadline):
                        raise ConnectionError("connection closed after %d of %d replies" % (len(out), n))
        del self.buf[:pos]
        return out

    def command(self, *args, timeout=None):
        self.send(encode_command(*args))
        return self.read_reply(timeout)

    def raw_command(self, *args, timeout=None):
        self.send(encode_command(*args))
        return self.read_raw_reply(timeout)

    def read_until_closed(self, timeout=None):
        """Reads until the server closes; returns all bytes read. Raises
        socket.timeout if the connection is still open at the deadline."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        for _ in range(1000000):
            if not self._fill(deadline):
                data = bytes(self.buf)
                self.buf.clear()
                return data
        raise AssertionError("unreachable: read loop bound hit")

    def is_closed(self, timeout=None):
        """True if the server closes the connection within `timeout`
        (discarding any bytes read), False if it stays open."""
        try:
            self.read_until_closed(timeout)
            return True
        except socket.timeout:
            return False


def free_port():
    """A loopback port free right now (another process may take it before use)."""
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RedisServer:
    """redis-server 7 on a free loopback port, no persistence."""

    def __init__(self):
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (scripts/setup-deps.sh installs it)")
        self.dir = tempfile.mkdtemp(prefix="fkv-parity-redis-")
        for _ in range(20):
            self.port = free_port()
            self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_until(self._ping, timeout=10, what="redis-server to answer PING")
                return
            except AssertionError:
                self.proc.kill()
                self.proc.wait(10)
        raise RuntimeError("could not start redis-server")

    def _ping(self):
        if self.proc.poll() is not None:
            raise AssertionError("redis-server exited (port taken?)")
        try:
            with RawClient(self.port, timeout=1) as c:
                return c.command("PING") == "PONG"
        except OSError:
            return False

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
