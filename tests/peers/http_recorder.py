"""http_recorder.py — a small HTTP(S) server for the InfluxDB sink's tests:
it records every request (method, path, query, headers, body, the body
gunzipped) and answers from a script, so a test can see exactly what went
over the wire and play a server that fails in a chosen way.

Per request it takes the next action of its script (then the default):
    ("status", code, body, headers)   answer with that
    ("hang", seconds)                 read the request, answer nothing for that long, close
    ("close",)                        close the connection without an answer
    ("forward",)                      pass the request to `upstream` (a real InfluxDB) and
                                      relay its answer (502 when it is down)
The default action is ("forward",) with an upstream, else ("status", 204, b"", {}).

TLS: certs (peers.Certs) serves HTTPS with server.pem; require_client_cert
asks for a client certificate signed by ca.pem.

Used by tests/system/test_influx.py and test_ingest.py; plain library code.
"""
import gzip
import http.client
import http.server
import socket
import ssl
import threading
import time
import urllib.parse

import peers


class Request:
    def __init__(self, method, path, query, headers, body, peer_port=None):
        self.peer_port = peer_port  # the client's port: one per TCP connection
        self.method = method
        self.path = path
        self.query = query          # {key: value} (last one wins)
        self.headers = headers      # {lower-case name: value}
        self.raw = body
        self.body = body
        if headers.get("content-encoding") == "gzip":
            self.body = gzip.decompress(body)
        self.t = time.monotonic()

    def lines(self):
        return [l for l in self.body.decode("utf-8").split("\n") if l]

    def __repr__(self):
        return f"<{self.method} {self.path} {self.query} {len(self.raw)} bytes>"


class HTTPRecorder:
    def __init__(self, upstream=None, port=None, certs=None, require_client_cert=False):
        self.upstream = upstream    # "127.0.0.1:PORT" of a real InfluxDB (plain HTTP)
        self.requests = []
        self.script = []
        self.lock = threading.Lock()
        self.port = port or peers.free_port()
        self.certs = certs
        self.require_client_cert = require_client_cert
        self.srv = None
        self.thread = None
        self.start()

    # ------------------------------------------------------------ control
    def push(self, *actions):
        with self.lock:
            self.script.extend(actions)

    def taken(self):
        with self.lock:
            return list(self.requests)

    def writes(self):
        return [r for r in self.taken() if r.path.endswith("/write")]

    def start(self):
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # quiet
                pass

            def do_GET(self):
                self._serve()

            def do_POST(self):
                self._serve()

            def _serve(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                u = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                req = Request(self.command, u.path, q, hdrs, body, self.client_address[1])
                with rec.lock:
                    rec.requests.append(req)
                    act = rec.script.pop(0) if rec.script else None
                if act is None:
                    act = ("forward",) if rec.upstream else ("status", 204, b"", {})
                kind = act[0]
                if kind == "hang":
                    time.sleep(act[1])
                    self.close_connection = True
                    return
                if kind == "close":
                    self.close_connection = True
                    return
                if kind == "forward":
                    code, rbody, rh = rec._forward(self.command, self.path, hdrs, body)
                else:
                    code, rbody, rh = act[1], act[2], dict(act[3]) if len(act) > 3 else {}
                self.send_response(code)
                for k, v in rh.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(rbody)))
                self.end_headers()
                self.wfile.write(rbody)

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.srv.daemon_threads = True
        if self.certs is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.certs.path("server.pem"), self.certs.path("server.key"))
            if self.require_client_cert:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(self.certs.path("ca.pem"))
            self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def _forward(self, method, path, hdrs, body):
        host, port = self.upstream.rsplit(":", 1)
        keep = {k: v for k, v in hdrs.items() if k in ("content-type", "content-encoding", "authorization")}
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=10)
            c.request(method, path, body=body, headers=keep)
            r = c.getresponse()
            data = r.read()
            rh = {k: v for k, v in r.getheaders() if k.lower() in ("content-type", "retry-after")}
            c.close()
            return r.status, data, rh
        except OSError as e:
            return 502, f"upstream: {e}".encode(), {}

    def stop(self):
        if self.srv is not None:
            self.srv.shutdown()
            self.srv.server_close()
            self.srv = None

    def restart(self):
        self.stop()
        self.start()

    @property
    def url(self):
        return f"{'https' if self.certs else 'http'}://127.0.0.1:{self.port}"


def refused_port():
    """A loopback port nobody listens on (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
