"""influxdb.py — a private InfluxDB 1.x (Debian's `influxdb`, 1.6.7) for the
system tests and benchmarks, and a small client for its HTTP API.

The server binds 127.0.0.1 on a port chosen at run time (HTTP) and a second
one for its RPC service (backup/restore, moved off the default 8088 so that
several servers can run side by side); data, meta and WAL live in the test's
temporary directory; usage reporting, the _internal monitor database,
continuous queries and subscriptions are off.  It is ready when /ping answers
204.  Stopped by its PID; restartable on the same ports with the same data
(an outage in a test).  Optional: HTTPS with a certificate made by the test,
authentication (an admin user is created through the API before auth is
switched on: InfluxDB 1.x allows the first admin to be created then).

Plain library code: usable from a REPL, from tests/system (fixtures in the
tests that need it) and from bench/.
"""
import base64
import gzip
import json
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

import peers


class InfluxError(RuntimeError):
    pass


class InfluxDB:
    """influxd on 127.0.0.1:<port>."""

    def __init__(self, workdir, name="influxdb", port=None, certs=None, auth=None, log_writes=True):
        self.workdir = str(workdir)
        self.name = name
        self.port = port or peers.free_port()
        self.rpc_port = peers.free_port()
        self.certs = certs          # peers.Certs: serve HTTPS with server.pem/server.key
        self.auth = auth            # (user, password) of the admin; auth-enabled when given
        self.dir = os.path.join(self.workdir, f"{name}-data")
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.workdir, f"{name}.conf")
        self.log_writes = log_writes
        self.proc = None
        self._write_conf(auth_enabled=False)
        self.start()
        if auth:
            # the first admin may be created without credentials; then auth goes on
            self.query(f"CREATE USER \"{auth[0]}\" WITH PASSWORD '{auth[1]}' WITH ALL PRIVILEGES",
                       method="POST", use_auth=False)
            self.stop()
            self._write_conf(auth_enabled=True)
            self.start()

    # ----------------------------------------------------------- process
    def _write_conf(self, auth_enabled):
        d = self.dir
        lines = [
            "reporting-disabled = true",
            f'bind-address = "127.0.0.1:{self.rpc_port}"',
            "[meta]", f'  dir = "{d}/meta"', "  logging-enabled = false",
            "[data]", f'  dir = "{d}/data"', f'  wal-dir = "{d}/wal"',
            "  query-log-enabled = false", '  index-version = "inmem"',
            "[monitor]", "  store-enabled = false",
            "[continuous_queries]", "  enabled = false",
            "[subscriber]", "  enabled = false",
            "[retention]", "  enabled = false",
            "[http]", "  enabled = true", f'  bind-address = "127.0.0.1:{self.port}"',
            f"  auth-enabled = {'true' if auth_enabled else 'false'}",
            f"  log-enabled = {'true' if self.log_writes else 'false'}",
            "  pprof-enabled = false",
        ]
        if self.certs is not None:
            lines += ["  https-enabled = true",
                      f'  https-certificate = "{self.certs.path("server.pem")}"',
                      f'  https-private-key = "{self.certs.path("server.key")}"']
        lines += ["[logging]", '  level = "warn"', "  suppress-logo = true"]
        with open(self.conf, "w", encoding="ascii") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=20.0):
        self.proc = peers.Proc(["influxd", "-config", self.conf],
                               os.path.join(self.workdir, f"{self.name}.log"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"influxd exited with {self.proc.poll()}: {self.proc.output()[-3000:]}")
            try:
                if self._request("GET", "/ping", use_auth=False, timeout=1)[0] == 204:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("influxd did not answer /ping: " + self.proc.output()[-3000:])

    def stop(self):
        if self.proc is not None:
            self.proc.stop()

    def kill(self):
        if self.proc is not None:
            self.proc.kill9()

    def restart(self):
        self.stop()
        self.start()

    def output(self):
        return self.proc.output() if self.proc else ""

    @property
    def url(self):
        return f"{'https' if self.certs else 'http'}://127.0.0.1:{self.port}"

    # ------------------------------------------------------------ HTTP API
    def _request(self, method, path, params=None, body=None, headers=None, use_auth=True, timeout=10):
        q = dict(params or {})
        url = self.url + path + ("?" + urllib.parse.urlencode(q) if q else "")
        h = dict(headers or {})
        if use_auth and self.auth:
            tok = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            h["Authorization"] = "Basic " + tok
        req = urllib.request.Request(url, data=body, method=method, headers=h)
        ctx = None
        if self.certs is not None:
            ctx = ssl.create_default_context(cafile=self.certs.path("ca.pem"))
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def query(self, q, db=None, method="GET", epoch="ns", use_auth=True):
        """Run InfluxQL; returns the decoded JSON `results` list (raises on an error)."""
        params = {"q": q, "epoch": epoch}
        if db:
            params["db"] = db
        if method == "POST":
            status, body = self._request("POST", "/query", params=params, use_auth=use_auth)
        else:
            status, body = self._request("GET", "/query", params=params, use_auth=use_auth)
        if status != 200:
            raise InfluxError(f"query {q!r}: HTTP {status}: {body[:500]!r}")
        doc = json.loads(body)
        for res in doc.get("results", []):
            if "error" in res:
                raise InfluxError(f"query {q!r}: {res['error']}")
        return doc.get("results", [])

    def create_db(self, db):
        self.query(f'CREATE DATABASE "{db}"', method="POST")

    def write(self, db, lines, precision="ns", gz=False):
        """POST line protocol; returns (status, body)."""
        body = ("\n".join(lines) if isinstance(lines, (list, tuple)) else lines).encode()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if gz:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return self._request("POST", "/write", params={"db": db, "precision": precision},
                             body=body, headers=headers)

    def series(self, q, db):
        """The rows of a query as a list of dicts per series: {name, tags, columns, values}."""
        out = []
        for res in self.query(q, db=db):
            out.extend(res.get("series", []))
        return out

    def rows(self, q, db):
        """Every row of every series as a dict (columns → values, plus the series' tags)."""
        out = []
        for s in self.series(q, db):
            for v in s.get("values", []):
                row = dict(zip(s["columns"], v))
                row.update(s.get("tags") or {})
                row["_measurement"] = s.get("name")
                out.append(row)
        return out

    def field_types(self, measurement, db):
        """{field: type} as InfluxDB stores them (float, integer, string, boolean)."""
        types = {}
        for s in self.series(f'SHOW FIELD KEYS FROM "{measurement}"', db):
            for k, t in s.get("values", []):
                types[k] = t
        return types

    def count(self, measurement, field, db, where=""):
        rows = self.rows(f'SELECT count("{field}") FROM "{measurement}" {where}', db)
        return rows[0]["count"] if rows else 0
