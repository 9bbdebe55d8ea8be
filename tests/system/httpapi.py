"""httpapi.py — helpers for the HTTP API's system tests: a small client
(plain and TLS, raw sockets when a test needs to send something a library
would not), the tokens file, starting a gateway with an `http:` section and
finding its port, and the OpenAPI check: every response a test receives is
validated against docs/openapi.yaml (the status must be documented for the
path and method, and a JSON body must match its schema).
"""
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import time

import pytest
import yaml

from conftest import ROOT, require

try:
    import jsonschema
    JSONSCHEMA_OK = True
except ImportError:  # apt install python3-jsonschema (scripts/deps.sh test)
    JSONSCHEMA_OK = False

OPENAPI_PATH = os.path.join(ROOT, "docs", "openapi.yaml")

OPERATOR = "fbt_op-3Kq9mZ0xXfWc1hTt7pLr2vBn8sDd4gYa6jQe5uIo0wE"
VIEWER = "fbt_vi-Hh2Jk4Ll6Zx8Cv0Bn1Mq3We5Rt7Yu9Io2Pa4Sd6Fg8"


def token_line(name, role, token):
    return f"{name}:{role}:sha256:{hashlib.sha256(token.encode()).hexdigest()}"


def write_tokens(path, *entries):
    with open(path, "w", encoding="utf-8") as f:
        f.write("# test tokens\n")
        for e in entries:
            f.write(token_line(*e) + "\n")
    os.chmod(path, 0o600)


_SPEC = None


def spec():
    global _SPEC  # pylint: disable=global-statement
    if _SPEC is None:
        with open(OPENAPI_PATH, encoding="utf-8") as f:
            _SPEC = yaml.safe_load(f)
    return _SPEC


def _template_for(path):
    """The OpenAPI path template that matches a concrete path."""
    for tpl in spec()["paths"]:
        rx = "^" + re.sub(r"\{[^}]+\}", "[^/]+", re.escape(tpl).replace(r"\{", "{").replace(r"\}", "}")) + "$"
        if re.match(rx, path):
            return tpl
    return None


def validate(method, path, status, ctype, body):
    """Fail unless the response is documented and its JSON matches the schema."""
    require("jsonschema", JSONSCHEMA_OK, "python3-jsonschema is missing (scripts/deps.sh test installs it)")
    tpl = _template_for(path.split("?")[0])
    if tpl is None:  # a path the API does not have: a 404 with the Error body
        assert status == 404, f"{path} is not in docs/openapi.yaml but answered {status}"
        resp = {"$ref": "#/components/responses/Error"}
    else:
        op = spec()["paths"][tpl].get(method.lower())
        assert op, f"{method} {tpl} is not in docs/openapi.yaml"
        resp = op["responses"].get(str(status))
    assert resp is not None, f"{method} {tpl}: status {status} is not documented (body {body[:300]!r})"
    if "$ref" in resp:
        resp = spec()["components"]["responses"][resp["$ref"].split("/")[-1]]
    content = resp.get("content", {})
    if ctype and ctype.startswith("application/json"):
        schema = content.get("application/json", {}).get("schema")
        assert schema is not None, f"{method} {tpl} {status}: JSON body but no JSON schema documented"
        doc = json.loads(body)
        resolver = jsonschema.RefResolver(base_uri="", referrer=spec())
        v = jsonschema.Draft202012Validator(schema, resolver=resolver)
        errors = sorted(v.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{method} {path} {status}: body does not match docs/openapi.yaml: " + "; ".join(
            f"{list(e.path)}: {e.message}" for e in errors[:5])
        return doc
    if status < 400:
        assert any(ctype.startswith(k) for k in content), f"{method} {tpl} {status}: {ctype} not documented"
    return None


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)


class Client:
    """One HTTP(S) client for the gateway's API; validate=True checks every
    API answer against the OpenAPI description."""

    def __init__(self, port, token=None, ca=None, validate_api=True):
        self.port = port
        self.token = token
        self.ca = ca
        self.validate_api = validate_api

    def conn(self, timeout=10):
        if self.ca:
            ctx = ssl.create_default_context(cafile=self.ca)
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, token=..., timeout=15):
        h = dict(headers or {})
        tok = self.token if token is ... else token
        if tok:
            h["Authorization"] = f"Bearer {tok}"
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read().decode("utf-8", "replace")
            res = Resp(r.status, r.getheaders(), data)
        finally:
            c.close()
        if self.validate_api and path.startswith("/api/") and method != "OPTIONS" and r.status != 405:
            validate(method, path, res.status, res.header("Content-Type") or "", res.body)
        return res

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body=body, **kw)


def raw(port, data, timeout=10):
    """Send raw bytes, return what the server answers (until it closes or a pause)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        s.settimeout(2)
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
                if b"\r\n\r\n" in out and len(out) > 12:
                    # a complete small answer: headers and a Content-Length body
                    head, _, rest = out.partition(b"\r\n\r\n")
                    m = re.search(rb"(?i)content-length: *(\d+)", head)
                    if m and len(rest) >= int(m.group(1)):
                        break
        except socket.timeout:
            pass
        return out


def http_section(port=0, **kw):
    sec = {"listen": f"127.0.0.1:{port}"}
    sec.update(kw)
    return sec


def api_port(gw, timeout=15):
    """The port from the gateway's "http: API … on http://127.0.0.1:PORT/" line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"http: API.* on https?://[^ ]*:(\d+)/", gw.output())
        if m:
            return int(m.group(1))
        if not gw.alive():
            pytest.fail("gateway exited:\n" + gw.output()[-3000:])
        time.sleep(0.05)
    pytest.fail("the HTTP API did not start:\n" + gw.output()[-3000:])


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


class Events:
    """A Server-Sent Events reader on a raw socket (HTTP/1.1, chunked)."""

    def __init__(self, port, token=None, last_id=None, timeout=10, ca=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if ca:
            ctx = ssl.create_default_context(cafile=ca)
            self.sock = ctx.wrap_socket(self.sock, server_hostname="127.0.0.1")
        req = "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        if token:
            req += f"Authorization: Bearer {token}\r\n"
        if last_id:
            req += f"Last-Event-ID: {last_id}\r\n"
        self.sock.sendall((req + "\r\n").encode())
        self.buf = b""
        head = self._until(b"\r\n\r\n")
        self.status = int(head.split()[1])
        self.headers = head.decode()
        self.text = ""

    def _until(self, sep):
        while sep not in self.buf:
            b = self.sock.recv(65536)
            if not b:
                raise EOFError("stream closed")
            self.buf += b
        out, _, self.buf = self.buf.partition(sep)
        return out

    def _chunk(self):
        size = int(self._until(b"\r\n").split(b";")[0], 16)
        if size == 0:
            raise EOFError("end of stream")
        while len(self.buf) < size + 2:
            b = self.sock.recv(65536)
            if not b:
                raise EOFError("stream closed")
            self.buf += b
        data, self.buf = self.buf[:size], self.buf[size + 2:]
        return data.decode()

    def next(self):
        """The next event as {"event","data","id"} (data parsed as JSON)."""
        while "\n\n" not in self.text:
            self.text += self._chunk()
        frame, _, self.text = self.text.partition("\n\n")
        ev = {"event": "message", "data": "", "id": None}
        for line in frame.split("\n"):
            if line.startswith(":") or not line:
                continue
            k, _, v = line.partition(":")
            v = v[1:] if v.startswith(" ") else v
            if k == "data":
                ev["data"] += v
            elif k in ("event", "id"):
                ev[k] = v
        if not ev["data"]:
            return self.next()  # retry: only
        ev["data"] = json.loads(ev["data"])
        return ev

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
