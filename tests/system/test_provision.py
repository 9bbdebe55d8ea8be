"""test_provision.py — first boot with a claim certificate (issue 20;
docs/fleet.md#provisioning), through the real binary against Mosquitto with
mutual TLS (require_certificate, the certificate's CN as the user name) and
the reference provisioning service tests/peers/provision_service.py, which
signs with the test CA: the gateway starts in the provisioning state with
the claim certificate, makes its key pair on the box (the private key never
leaves it), sends a CSR, stores the certificate it is given, restarts itself
and connects with its own identity; a restart later needs no provisioning;
certificates that are not for its key or name are refused.
"""
import os
import stat
import subprocess
import time

import peers
from conftest import GW_ID, GW_STATUS, gw_config, topic
from test_run import device

PROV = topic(GW_ID, "provision")
HERE = os.path.dirname(os.path.abspath(__file__))
SERVICE = os.path.join(HERE, "..", "peers", "provision_service.py")


def pki(tmp_path):
    c = peers.Certs(os.path.join(str(tmp_path), "pki"))
    peers.make_cert(c.dir, "ca", "claim", "claim-fleet", False)
    peers.make_cert(c.dir, "ca", "service", "provisioning-service", False)
    return c


def config(broker, certs, mb, tmp_path):
    dev = os.path.join(str(tmp_path), "identity")
    os.makedirs(dev, exist_ok=True)
    cfg = gw_config(broker.port, [device(mb.port, [{"name": "x", "addr": "hr:0"}], poll="200ms")],
                    mqtt={"url": f"mqtts://127.0.0.1:{broker.port}", "tls": {"ca": certs.path("ca.pem")}},
                    fleet={"state_dir": os.path.join(str(tmp_path), "state"),
                           "provisioning": {"claim_cert": certs.path("claim.pem"),
                                            "claim_key": certs.path("claim.key"),
                                            "cert": os.path.join(dev, "device.pem"),
                                            "key": os.path.join(dev, "device.key")}})
    return cfg, os.path.join(dev, "device.pem"), os.path.join(dev, "device.key")


def state_of(m):
    j = m.json() or {}
    return j.get("state")


class Service:
    def __init__(self, tmp_path, broker, certs, *extra):
        self.log = os.path.join(str(tmp_path), "provision-service.log")
        self.p = subprocess.Popen(  # pylint: disable=consider-using-with
            ["/usr/bin/python3", SERVICE, "--port", str(broker.port), "--cafile", certs.path("ca.pem"),
             "--cert", certs.path("service.pem"), "--key", certs.path("service.key"),
             "--ca-cert", certs.path("ca.pem"), "--ca-key", certs.path("ca.key"), *extra],
            stdout=subprocess.PIPE, stderr=open(self.log, "ab"), text=True)  # pylint: disable=consider-using-with
        line = self.p.stdout.readline()
        assert line.strip() == "READY", f"provisioning service: {line!r}"

    def line(self):
        return self.p.stdout.readline().strip()

    def stop(self):
        self.p.terminate()
        self.p.wait(5)


def test_provisioning_with_claim_certificate_and_csr(start_broker, start_modbus, start_gateway, watch, tmp_path):
    certs = pki(tmp_path)
    broker = start_broker(certs=certs)
    mb = start_modbus({"units": {"1": {"hr": [5]}}})
    w = watch(broker.port, certs=certs)
    svc = Service(tmp_path, broker, certs)
    try:
        cfg, cert, key = config(broker, certs, mb, tmp_path)
        gw = start_gateway(cfg)
        pid = gw.proc.p.pid
        csr = w.wait_for(lambda m: True, 20, topic=f"{PROV}/csr")
        assert csr is not None, w.messages()[-10:]
        body = csr.json()
        assert body["gateway"] == GW_ID and "BEGIN CERTIFICATE REQUEST" in body["csr"], body
        assert "PRIVATE KEY" not in csr.text()
        assert w.wait_for(lambda m: state_of(m) == "provisioning", 10, topic=GW_STATUS), w.messages(GW_STATUS)
        assert "u'claim-fleet'" in broker.output(), "the gateway did not connect with the claim certificate"
        # the key was made on the box, readable by the gateway only; the CSR is for it
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
        from cryptography import x509  # pylint: disable=import-outside-toplevel
        from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel
        with open(key, "rb") as f:
            priv = serialization.load_pem_private_key(f.read(), None)
        req = x509.load_pem_x509_csr(body["csr"].encode())
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        enc = serialization.Encoding.PEM
        assert req.public_key().public_bytes(enc, pub) == priv.public_key().public_bytes(enc, pub)
        assert svc.line() == f"SIGNED {GW_ID}"
        r = w.wait_for(lambda m: True, 10, topic=f"{PROV}/result")
        assert r is not None and r.json()["ok"] is True, w.messages()[-10:]
        # restarted itself (same process) with its own certificate: online, polling
        t = time.monotonic()
        m = w.wait_for(lambda m: state_of(m) == "online", 20, topic=GW_STATUS, after=t - 5)
        assert m is not None, w.messages(GW_STATUS)[-5:]
        assert gw.alive() and gw.proc.p.pid == pid
        assert os.path.exists(cert)
        assert peers.wait_until(lambda: f"u'{GW_ID}'" in broker.output(), 10), broker.output()[-2000:]
        assert w.wait_for(lambda m: True, 10, topic=topic("plc1", "telemetry"), after=time.monotonic())
        # a later restart needs no provisioning: online at once, no CSR
        assert gw.stop() == 0
        n_csr = len(w.messages(f"{PROV}/csr"))
        t = time.monotonic()
        start_gateway(cfg, name="again")
        assert w.wait_for(lambda m: state_of(m) == "online", 20, topic=GW_STATUS, after=t)
        time.sleep(1)
        assert len(w.messages(f"{PROV}/csr")) == n_csr
    finally:
        svc.stop()


def test_provisioning_refuses_a_certificate_not_for_it(start_broker, start_modbus, start_gateway, watch, tmp_path):
    certs = pki(tmp_path)
    broker = start_broker(certs=certs)
    mb = start_modbus({"units": {"1": {"hr": [5]}}})
    w = watch(broker.port, certs=certs)
    cfg, cert, _ = config(broker, certs, mb, tmp_path)
    start_gateway(cfg)
    assert w.wait_for(lambda m: True, 20, topic=f"{PROV}/csr"), w.messages()[-10:]
    time.sleep(0.5)
    # another certificate of the same CA (not for the gateway's key)
    with open(certs.path("subscriber.pem"), encoding="ascii") as f:
        w.publish(f"{PROV}/cert", {"cert": f.read()}, qos=1)
    r = w.wait_for(lambda m: True, 10, topic=f"{PROV}/result")
    assert r is not None and r.json()["ok"] is False and "not for this gateway's key" in r.json()["error"], r
    # a wrong service: signs the gateway's key for another name
    svc = Service(tmp_path, broker, certs, "--cn-override", "someone-else")
    try:
        t = time.monotonic()
        csr = w.messages(f"{PROV}/csr")[-1]
        broker_pub = peers.Watcher(broker.port, (), certs=certs)
        broker_pub.publish(csr.topic, csr.payload, qos=1)  # replay the CSR to the service
        broker_pub.close()
        r = w.wait_for(lambda m: True, 10, topic=f"{PROV}/result", after=t)
        assert r is not None and r.json()["ok"] is False and "CN=someone-else" in r.json()["error"], r
    finally:
        svc.stop()
    assert not os.path.exists(cert)
    assert state_of(w.messages(GW_STATUS)[-1]) == "provisioning", w.messages(GW_STATUS)[-1]
