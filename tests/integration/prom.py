"""A Prometheus server for featurekv's metrics tests (stdlib only).

- Prometheus: writes a config with one job `featurekv` scraping a static
  target every second, starts /usr/bin/prometheus on a free loopback port
  with its TSDB in a fresh temp dir, waits for /-/ready, and offers
  query(expr) and wait_for(expr, predicate, timeout). Stops on stop() or at
  the end of a `with` block.
- http_get(port, path) and parse_exposition(text): one request to the
  metrics endpoint, and its samples as {(name, frozenset(labels)): value}.
- dashboard_exprs(path): every target `expr` of a Grafana dashboard JSON,
  with the Grafana variables replaced so Prometheus can evaluate them.

Usage:

    with Prometheus("127.0.0.1:%d" % metrics_port, rule_files=[alerts]) as prom:
        prom.wait_for('up{job="featurekv"}', lambda r: r and r[0]["value"][1] == "1", timeout=20)
        data = prom.query("featurekv_ready")

Everything talks to 127.0.0.1 only; every loop is bounded in time.
"""

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

PROMETHEUS_BIN = "/usr/bin/prometheus"
HOST = "127.0.0.1"


def http_get(port, path, method="GET", timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.read().decode(), dict(r.getheaders())
    finally:
        c.close()


def parse_exposition(text):
    """{(name, frozenset(labels)): value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        labels = frozenset()
        if "{" in head:
            name, rest = head.split("{", 1)
            pairs = []
            for part in rest.rstrip("}").split('",'):
                k, v = part.split("=", 1)
                pairs.append((k, v.strip('"')))
            labels = frozenset(pairs)
        else:
            name = head
        out[(name, labels)] = float(value)
    return out



class PrometheusError(Exception):
    """Prometheus failed to start, or answered a query with an error."""


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _yaml_str(s):
    # JSON strings are valid YAML flow scalars; this quotes paths and targets.
    return json.dumps(str(s))


class Prometheus:
    """One Prometheus server scraping `target` ("127.0.0.1:PORT") as job
    `featurekv`, scrape and evaluation interval 1 s.

    rule_files: optional list of rule file paths (made absolute).
    Starts in the constructor; use as a context manager or call stop().
    """

    def __init__(self, target, rule_files=None, binary=PROMETHEUS_BIN, start_timeout=30.0,
                 scrape_interval="1s", evaluation_interval="1s"):
        self.target = target
        self.rule_files = [os.path.abspath(p) for p in (rule_files or [])]
        self.binary = binary
        self.start_timeout = start_timeout
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.proc = None
        self.port = None
        self.url = None
        self.dir = tempfile.mkdtemp(prefix="fkv-prom-")
        self.config_path = os.path.join(self.dir, "prometheus.yml")
        self.log_path = os.path.join(self.dir, "prometheus.log")
        self._log = None
        try:
            self._write_config()
            self._start()
        except BaseException:
            self.stop()
            raise

    # -- life cycle ---------------------------------------------------------

    def _write_config(self):
        lines = [
            "global:",
            "  scrape_interval: %s" % self.scrape_interval,
            "  evaluation_interval: %s" % self.evaluation_interval,
            "  scrape_timeout: %s" % self.scrape_interval,
        ]
        if self.rule_files:
            lines.append("rule_files:")
            lines += ["  - %s" % _yaml_str(p) for p in self.rule_files]
        lines += [
            "scrape_configs:",
            "  - job_name: featurekv",
            "    metrics_path: /metrics",
            "    static_configs:",
            "      - targets: [%s]" % _yaml_str(self.target),
            "",
        ]
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines))

    def _start(self):
        # The free port can be taken between free_port() and the bind: retry
        # a few times when Prometheus exits during start-up.
        last_error = None
        for _attempt in range(3):
            self.port = free_port()
            self.url = "http://%s:%d" % (HOST, self.port)
            storage = os.path.join(self.dir, "data")
            shutil.rmtree(storage, ignore_errors=True)
            self._log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [self.binary,
                 "--config.file=" + self.config_path,
                 "--storage.tsdb.path=" + storage,
                 "--web.listen-address=%s:%d" % (HOST, self.port),
                 "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.dir)
            try:
                self._wait_ready()
                return
            except PrometheusError as e:
                last_error = e
                if self.proc.poll() is None:  # running but not ready in time: give up
                    raise
                self._log.close()
                self._log = None
        raise last_error

    def _wait_ready(self):
        deadline = time.monotonic() + self.start_timeout
        interval = 0.02
        while True:
            code = self.proc.poll()
            if code is not None:
                raise PrometheusError("prometheus exited with code %d during start-up:\n%s" % (code, self.log_tail()))
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass  # not listening yet, or 503 while starting
            if time.monotonic() >= deadline:
                raise PrometheusError("prometheus not ready after %.0fs:\n%s" % (self.start_timeout, self.log_tail()))
            time.sleep(interval)
            interval = min(interval * 1.5, 0.2)

    def log_tail(self, limit=4000):
        """The end of Prometheus's log (stdout and stderr)."""
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace")

    def stop(self):
        """Terminates Prometheus, waits for it, removes the temp dir. Idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- queries ------------------------------------------------------------

    def query(self, expr, at=None):
        """Evaluates `expr` (instant query, now or at unix time `at`).

        Returns the response's `data` ({"resultType": ..., "result": ...});
        raises PrometheusError with Prometheus's error text when the status
        is not "success" (e.g. a PromQL syntax error)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = "%.3f" % at
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            # 400 (bad query), 422 (cannot execute), 503 (timeout/abort):
            # the body still has Prometheus's JSON with the error text.
            body = e.read()
            try:
                reply = json.loads(body)
            except ValueError:
                raise PrometheusError("HTTP %d for %r: %s" % (e.code, expr, body[:500]))
            raise PrometheusError("%s: %s (query %r)" % (reply.get("errorType"), reply.get("error"), expr))
        reply = json.loads(body)
        if reply.get("status") != "success":
            raise PrometheusError("%s: %s (query %r)" % (reply.get("errorType"), reply.get("error"), expr))
        return reply["data"]

    def wait_for(self, expr, predicate, timeout=30.0, interval=0.1):
        """Queries `expr` until predicate(result) is true, where `result` is
        the response's data["result"] (a list of {"metric", "value"} for a
        vector; [time, "value"] for a scalar). Returns that result.

        Raises AssertionError with the last result when `timeout` seconds
        pass; a query error (PrometheusError) is raised at once."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)["result"]
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise AssertionError("timed out after %.1fs waiting on %r (last result %r)" % (timeout, expr, result))
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def sample_values(result):
    """{frozenset(labels.items()): float} of an instant vector result."""
    return {frozenset(s["metric"].items()): float(s["value"][1]) for s in result}


# -- Grafana dashboards -------------------------------------------------------

# Grafana's interval variables, with the value tests use.
_INTERVAL_VARS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
# A variable inside a regex matcher (=~"$instance", =~"${instance:regex}").
_REGEX_VAR_RE = re.compile(r'(=~\s*")\$(?:\{[A-Za-z_][A-Za-z0-9_]*(?::[A-Za-z]+)?\}|[A-Za-z_][A-Za-z0-9_]*)(")')
_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def substitute_grafana_vars(expr):
    """`expr` with Grafana variables replaced: $__rate_interval and
    $__interval -> 1m, $__range -> 1h, any variable used as a whole regex
    matcher value (instance=~"$instance") -> .*. Raises ValueError when a
    variable is left that Prometheus could not evaluate."""
    expr = _REGEX_VAR_RE.sub(r"\1.*\2", expr)

    def interval(m):
        name = m.group(1) or m.group(2)
        if name in _INTERVAL_VARS:
            return _INTERVAL_VARS[name]
        raise ValueError("Grafana variable $%s used outside a =~ matcher in %r" % (name, expr))

    return _VAR_RE.sub(interval, expr)


def _walk_panels(panels):
    for panel in panels or []:
        yield panel
        # A collapsed row holds its panels (so do the old-style rows).
        yield from _walk_panels(panel.get("panels"))


def dashboard_targets(path):
    """(panel title, raw expr, substituted expr) for every target of every
    panel of the dashboard at `path`, nested rows included."""
    with open(path) as f:
        dash = json.load(f)
    # An exported dashboard may be wrapped as {"dashboard": {...}}.
    if "panels" not in dash and isinstance(dash.get("dashboard"), dict):
        dash = dash["dashboard"]
    panels = list(dash.get("panels") or [])
    for r in dash.get("rows") or []:  # schema < 16
        panels.append({"title": r.get("title"), "panels": r.get("panels")})
    out = []
    for panel in _walk_panels(panels):
        for t in panel.get("targets") or []:
            expr = t.get("expr")
            if expr:
                out.append((panel.get("title"), expr, substitute_grafana_vars(expr)))
    return out


def dashboard_exprs(path):
    """Every target `expr` of the Grafana dashboard at `path` (panels and
    rows, recursively), with Grafana variables substituted
    (substitute_grafana_vars) so Prometheus can evaluate them."""
    return [e for _title, _raw, e in dashboard_targets(path)]
