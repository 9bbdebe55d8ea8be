"""peers.py — start and stop the real peers fieldbridge's system tests talk to:
Mosquitto (plain and mutual TLS, certificates made with the openssl CLI at test
time), the pymodbus server in modbus_server.py (TCP, or RTU over a socat pty
pair), and paho MQTT helper clients (3.1.1 and 5).

Every peer binds 127.0.0.1 on a port chosen at run time, logs to a file in the
test's temporary directory, and is stopped by its PID (SIGTERM, then SIGKILL).
Plain library code: conftest.py wraps it in pytest fixtures, and it can be
used from a REPL to reproduce a test by hand.
"""
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"  # Debian's interpreter: it sees python3-pymodbus and paho


def free_port():
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, proc=None):
    """Wait until 127.0.0.1:port accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(pred, timeout, interval=0.05):
    """Poll pred() until it returns something truthy; return it, or None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        r = pred()
        if r:
            return r
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


class Proc:
    """A child process with its output in a log file, stopped by PID."""

    def __init__(self, argv, log_path, env=None, cwd=None):
        self.argv = [str(a) for a in argv]
        self.log_path = str(log_path)
        self.log = open(self.log_path, "ab")
        self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                  stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                  start_new_session=True)
        self.pid = self.p.pid

    def poll(self):
        return self.p.poll()

    def wait(self, timeout):
        return self.p.wait(timeout=timeout)

    def send(self, sig):
        if self.p.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Signal, wait, SIGKILL if needed.  Returns the exit code."""
        if self.p.poll() is None:
            try:
                os.kill(self.pid, sig)
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait(timeout=5)
            except ProcessLookupError:
                pass
        self.log.close()
        return self.p.returncode

    def kill9(self):
        if self.p.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.p.wait(timeout=5)

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


# ------------------------------------------------------------------ Modbus
class ModbusServer:
    """tests/peers/modbus_server.py with values from a spec dict (see its doc)."""

    def __init__(self, workdir, spec, port=0, serial=None, name="modbus"):
        self.workdir = str(workdir)
        self.spec = spec
        self.serial = serial
        self.name = name
        self.spec_path = os.path.join(self.workdir, f"{name}-spec.json")
        with open(self.spec_path, "w", encoding="utf-8") as f:
            json.dump(spec, f)
        self.port = port
        self.proc = None
        self.start()

    def start(self):
        argv = [PY, os.path.join(HERE, "modbus_server.py"), "--port", self.port,
                "--spec", self.spec_path]
        if self.serial:
            argv += ["--serial", self.serial]
        out = os.path.join(self.workdir, f"{self.name}.log")
        skip = os.path.getsize(out) if os.path.exists(out) else 0  # earlier runs' lines
        self.proc = Proc(argv, out)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            text = self.proc.output()[skip:]
            for line in text.splitlines():
                if line.startswith("READY "):
                    self.port = int(line.split()[1])
                    wait_port(self.port, 5, self.proc.p)
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"modbus server exited: {text}")
            time.sleep(0.05)
        raise TimeoutError("modbus server did not start: " + self.proc.output())

    def stop(self):
        if self.proc is not None:
            self.proc.stop()

    def restart(self):
        self.stop()
        self.start()

    def connections(self):
        """How many TCP connections clients opened to this server (all its runs)."""
        return sum(1 for line in self.proc.output().splitlines() if line.startswith("CONNECTION "))

    def client(self):
        """A pymodbus TCP client on this server (for reading back writes)."""
        from pymodbus.client import ModbusTcpClient  # pylint: disable=import-outside-toplevel
        c = ModbusTcpClient("127.0.0.1", port=self.port, timeout=3)
        if not c.connect():
            raise RuntimeError(f"cannot connect to modbus server on {self.port}")
        return c

    def read_hr(self, addr, count=1, unit=1):
        c = self.client()
        try:
            r = c.read_holding_registers(addr, count, slave=unit)
            if r.isError():
                raise RuntimeError(f"read hr:{addr} failed: {r}")
            return list(r.registers)
        finally:
            c.close()

    def read_coils(self, addr, count=1, unit=1):
        c = self.client()
        try:
            r = c.read_coils(addr, count, slave=unit)
            if r.isError():
                raise RuntimeError(f"read co:{addr} failed: {r}")
            return list(r.bits[:count])
        finally:
            c.close()

    def write_hr(self, addr, values, unit=1):
        c = self.client()
        try:
            r = c.write_registers(addr, list(values), slave=unit)
            if r.isError():
                raise RuntimeError(f"write hr:{addr} failed: {r}")
        finally:
            c.close()


class SocatPair:
    """A virtual serial line: two ptys joined by socat, at DIR/<a> and DIR/<b>."""

    def __init__(self, workdir, a="ttyGW", b="ttyDEV"):
        self.a = os.path.join(str(workdir), a)
        self.b = os.path.join(str(workdir), b)
        self.proc = Proc(["socat", "-d", "-d", f"pty,raw,echo=0,link={self.a}",
                          f"pty,raw,echo=0,link={self.b}"],
                         os.path.join(str(workdir), "socat.log"))
        if not wait_until(lambda: os.path.exists(self.a) and os.path.exists(self.b), 10):
            raise TimeoutError("socat did not create the pty pair: " + self.proc.output())

    def stop(self):
        self.proc.stop()


# ---------------------------------------------------------------- Mosquitto
def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=30)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
            "-subj", f"/CN=fieldbridge test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    os.chmod(os.path.join(d, f"{name}.key"), 0o600)


def make_cert(d, ca, name, cn, server):
    ext = os.path.join(d, f"{name}.ext")
    with open(ext, "w", encoding="ascii") as f:
        if server:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        else:
            f.write("extendedKeyUsage=clientAuth\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext, cwd=d)
    os.chmod(os.path.join(d, f"{name}.key"), 0o600)


class Certs:
    """A test PKI: ca (signs server and client), otherca (signs nothing we use)."""

    def __init__(self, d, client_cn="gw-test"):
        self.dir = str(d)
        os.makedirs(self.dir, exist_ok=True)
        make_ca(self.dir, "ca")
        make_ca(self.dir, "otherca")
        make_cert(self.dir, "ca", "server", "127.0.0.1", True)
        make_cert(self.dir, "ca", "client", client_cn, False)
        make_cert(self.dir, "ca", "subscriber", "test-subscriber", False)

    def subscriber_tls(self):
        """A client TLS context for the test subscribers: our CA, the subscriber's
        certificate, the broker's name checked (its certificate is for IP
        127.0.0.1).  Built here with PROTOCOL_TLS_CLIENT because paho 1.6's
        tls_set() uses the deprecated ssl.PROTOCOL_TLS (a warning per test)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.path("ca.pem"))
        ctx.load_cert_chain(self.path("subscriber.pem"), self.path("subscriber.key"))
        return ctx

    def path(self, name):
        return os.path.join(self.dir, name)


class OpensslCA:
    """A certificate authority run with `openssl ca` at test time: certificates
    with any validity window (also already expired), revocation, and CRLs.
    RSA 2048 keys, so that OPC UA (Basic256Sha256) can use them as well as TLS.

        ca = OpensslCA(dir, "plant-ca")
        pem, key, der = ca.issue("server", "127.0.0.1", san="IP:127.0.0.1", server=True)
        ca.revoke(pem); crl_pem, crl_der = ca.crl()
    """

    def __init__(self, d, name="ca", days=365, parent=None):
        self.dir = os.path.join(str(d), name)
        self.name = name
        os.makedirs(os.path.join(self.dir, "newcerts"), exist_ok=True)
        open(os.path.join(self.dir, "index.txt"), "w", encoding="ascii").close()
        with open(os.path.join(self.dir, "crlnumber"), "w", encoding="ascii") as f:
            f.write("1000\n")
        self.conf = os.path.join(self.dir, "ca.cnf")
        with open(self.conf, "w", encoding="ascii") as f:
            f.write(f"""[ ca ]
default_ca = CA_default
[ CA_default ]
dir = {self.dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
certificate = $dir/ca.pem
private_key = $dir/ca.key
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
default_days = 30
default_crl_days = 7
policy = policy_any
unique_subject = no
email_in_dn = no
[ policy_any ]
commonName = supplied
organizationName = optional
""")
        self.pem, self.key = self.path("ca.pem"), self.path("ca.key")
        ext = ("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
               "subjectKeyIdentifier=hash\n")
        if parent is None:
            openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key, "-out", self.pem,
                    "-days", str(days), "-subj", f"/CN=fieldbridge test {name}",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.dir)
            with open(self.path("serial"), "w", encoding="ascii") as f:
                f.write("1000\n")
        else:  # an intermediate CA signed by parent
            openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key, "-out", self.path("ca.csr"),
                    "-subj", f"/CN=fieldbridge test {name}", cwd=self.dir)
            parent._sign(self.path("ca.csr"), self.pem, ext, days=days)  # pylint: disable=protected-access
            with open(self.path("serial"), "w", encoding="ascii") as f:
                f.write("2000\n")
        os.chmod(self.key, 0o600)
        openssl("x509", "-in", self.pem, "-outform", "DER", "-out", self.path("ca.der"), cwd=self.dir)
        self.der = self.path("ca.der")

    def path(self, name):
        return os.path.join(self.dir, name)

    def _sign(self, csr, out, ext_text, days=None, start=None, end=None):
        ext = out + ".ext"
        with open(ext, "w", encoding="ascii") as f:
            f.write("[ext]\n" + ext_text)
        args = ["ca", "-batch", "-config", self.conf, "-in", csr, "-out", out, "-notext",
                "-extfile", ext, "-extensions", "ext"]
        if start:
            args += ["-startdate", start]
        if end:
            args += ["-enddate", end]
        elif days is not None:
            args += ["-days", str(days)]
        openssl(*args, cwd=self.dir)

    @staticmethod
    def stamp(delta_days):
        """An `openssl ca` date (YYYYMMDDHHMMSSZ) delta_days from now."""
        return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() + delta_days * 86400))

    def issue(self, name, cn, san=None, server=True, days=30, start=None, end=None, uri=None, ua=False):
        """A certificate for cn signed by this CA: (pem, key, der).  start/end:
        OpensslCA.stamp(...) dates; san: "IP:127.0.0.1,DNS:localhost"; uri: an
        application URI for the subjectAltName (OPC UA); ua: OPC UA key usages."""
        key, csr, pem, der = (self.path(f"{name}.key"), self.path(f"{name}.csr"), self.path(f"{name}.pem"),
                              self.path(f"{name}.der"))
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={cn}",
                cwd=self.dir)
        os.chmod(key, 0o600)
        alt = ",".join(x for x in ((f"URI:{uri}" if uri else ""), san or "") if x)
        ext = "basicConstraints=critical,CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        if alt:
            ext += f"subjectAltName={alt}\n"
        if ua:
            ext += ("keyUsage=critical,digitalSignature,nonRepudiation,keyEncipherment,dataEncipherment\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n")
        else:
            ext += "extendedKeyUsage=" + ("serverAuth" if server else "clientAuth") + "\n"
        self._sign(csr, pem, ext, days=days, start=start, end=end)
        openssl("x509", "-in", pem, "-outform", "DER", "-out", der, cwd=self.dir)
        return pem, key, der

    def revoke(self, pem):
        openssl("ca", "-batch", "-config", self.conf, "-revoke", pem, cwd=self.dir)

    def crl(self, days=7, name="crl"):
        """The CRL as it stands now: (pem, der)."""
        pem, der = self.path(f"{name}.pem"), self.path(f"{name}.der")
        openssl("ca", "-batch", "-config", self.conf, "-gencrl", "-crldays", str(days), "-out", pem, cwd=self.dir)
        openssl("crl", "-in", pem, "-outform", "DER", "-out", der, cwd=self.dir)
        return pem, der


class Mosquitto:
    """A private Mosquitto broker on 127.0.0.1:port (optionally mutual TLS)."""

    def __init__(self, workdir, port=None, certs=None, name="mosquitto", tls=None, users=None, persistence=False):
        """certs: a Certs (mutual TLS with its CA); tls: {"ca", "cert", "key"} file paths
        for a TLS listener that asks for no client certificate; users: {name: password}
        — then only those may connect (mosquitto_passwd file, no anonymous clients);
        persistence: sessions and their subscriptions survive a stop()/start()."""
        self.workdir = str(workdir)
        self.port = port or free_port()
        self.certs = certs
        self.name = name
        self.conf = os.path.join(self.workdir, f"{name}.conf")
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {'false' if users else 'true'}",
                 f"persistence {'true' if persistence else 'false'}", "log_dest stderr", "log_type all",
                 "connection_messages true", "max_keepalive 3600"]
        if persistence:
            lines.append(f"persistence_location {self.workdir}/{name}-db/")
            os.makedirs(os.path.join(self.workdir, f"{name}-db"), exist_ok=True)
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to 'mosquitto' and cannot read our keys
        if certs is not None:
            lines += [f"cafile {certs.path('ca.pem')}", f"certfile {certs.path('server.pem')}",
                      f"keyfile {certs.path('server.key')}", "require_certificate true",
                      "use_identity_as_username true", "tls_version tlsv1.2"]
        elif tls is not None:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}",
                      "tls_version tlsv1.2"]
        if users:
            pwfile = os.path.join(self.workdir, f"{name}.passwd")
            for i, (u, pw) in enumerate(users.items()):
                subprocess.run(["mosquitto_passwd", "-b"] + (["-c"] if i == 0 else []) + [pwfile, u, pw],
                               check=True, capture_output=True, timeout=30)
            os.chmod(pwfile, 0o600)
            lines.append(f"password_file {pwfile}")
        with open(self.conf, "w", encoding="ascii") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = None
        self.start()

    def start(self):
        self.proc = Proc(["mosquitto", "-c", self.conf], os.path.join(self.workdir, f"{self.name}.log"))
        wait_port(self.port, 10, self.proc.p)

    def stop(self):
        if self.proc is not None:
            self.proc.stop()

    def restart(self):
        self.stop()
        self.start()

    def output(self):
        return self.proc.output() if self.proc else ""


# ------------------------------------------------------------ HTTP(S) files
class FileServer:
    """Serves the files of a directory over HTTP, or HTTPS with a server
    certificate (Certs), on 127.0.0.1 in a thread: a download peer (remote
    configurations by URL).  `requests` lists the paths asked for."""

    def __init__(self, root, certs=None, delay=None):
        import functools  # pylint: disable=import-outside-toplevel
        import http.server  # pylint: disable=import-outside-toplevel
        self.requests = []
        self.delay = dict(delay or {})  # path -> seconds to wait before answering (a slow server)
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                time.sleep(outer.delay.get(self.path, 0))
                super().do_GET()
        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.scheme = "http"
        if certs is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certs.path("server.pem"), certs.path("server.key"))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name):
        return f"{self.scheme}://127.0.0.1:{self.port}/{name}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------- MQTT client
class Watcher:
    """A paho client that records every message on its subscriptions."""

    def __init__(self, port, topics=("#",), version=5, certs=None, client_id=None, session=False):
        """session: an MQTT 5 session that outlives the connection (a broker with
        persistence keeps its subscriptions and queued messages across a restart;
        the client reconnects by itself)."""
        self.port = port
        self.version = version
        self.msgs = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        proto = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        cid = client_id or f"fbtest-{os.getpid()}-{id(self) & 0xFFFFFF:x}"
        self.c = mqtt.Client(client_id=cid, protocol=proto)
        if certs is not None:
            self.c.tls_set_context(certs.subscriber_tls())
        self.topics = list(topics)
        self.c.on_message = self._on_message
        self.c.on_connect = self._on_connect
        if version == 5 and session:
            from paho.mqtt.properties import Properties
            from paho.mqtt.packettypes import PacketTypes
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            self.c.reconnect_delay_set(0.1, 0.5)
            self.c.connect("127.0.0.1", port, keepalive=30, clean_start=False, properties=props)
        elif version == 5:
            self.c.connect("127.0.0.1", port, keepalive=30, clean_start=True)
        else:
            self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        if not self.connected.wait(10):
            self.c.loop_stop()
            raise TimeoutError(f"test MQTT client could not connect to port {port}")

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        for t in self.topics:
            client.subscribe(t, qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.msgs.append(Msg(msg.topic, msg.payload, msg.retain, msg.qos,
                                 getattr(msg, "properties", None), time.monotonic()))

    def messages(self, topic=None):
        with self.lock:
            return [m for m in self.msgs if topic is None or m.topic == topic]

    def clear(self):
        with self.lock:
            self.msgs.clear()

    def wait_for(self, pred, timeout=10.0, topic=None, after=0.0):
        """The first message (received at/after monotonic time `after`) with pred(msg) true."""
        def find():
            for m in self.messages(topic):
                if m.t >= after and pred(m):
                    return m
            return None
        return wait_until(find, timeout)

    def publish(self, topic, payload, qos=1, response_topic=None, correlation=None, retain=False):
        props = None
        if self.version == 5 and (response_topic or correlation):
            props = Properties(PacketTypes.PUBLISH)
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload)
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if qos > 0:
            info.wait_for_publish(timeout=5)
        return info

    def close(self):
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


class Msg:
    def __init__(self, topic, payload, retain, qos, props, t):
        self.topic = topic
        self.payload = payload
        self.retain = retain
        self.qos = qos
        self.props = props
        self.t = t

    def json(self):
        try:
            return json.loads(self.payload)
        except ValueError:
            return None

    def text(self):
        return self.payload.decode("utf-8", "replace")

    def __repr__(self):
        return f"<{self.topic} r={int(self.retain)} {self.payload[:300]!r}>"
