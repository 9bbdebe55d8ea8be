#!/usr/bin/python3
"""provision_service.py — a small reference provisioning service for
fieldbridge's tests (docs/fleet.md#provisioning).

Connects to the broker over mutual TLS with its own certificate, listens on
+/_/_/+/provision/csr, checks each certificate signing request (its
signature, CN equal to the gateway id in the topic), signs it with the test
CA for one day (clientAuth) and answers on <same prefix>/provision/cert with
{"cert": PEM}.  One line per event on stdout: READY, SIGNED <id>, REFUSED <id> <why>.

Start: provision_service.py --port P --cafile ca.pem --cert svc.pem --key svc.key
       --ca-cert ca.pem --ca-key ca.key [--cn-override X] (signs for CN X instead: a wrong certificate)
"""
import argparse
import datetime
import json
import ssl
import sys

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--ca-cert", required=True)
    ap.add_argument("--ca-key", required=True)
    ap.add_argument("--cn-override")
    a = ap.parse_args()
    with open(a.ca_cert, "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    with open(a.ca_key, "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)

    def on_connect(c, userdata, flags, rc, properties=None):
        c.subscribe("+/_/_/+/provision/csr", qos=1)

    def on_subscribe(c, userdata, mid, granted, properties=None):
        print("READY", flush=True)

    def on_message(c, userdata, msg):
        gw = msg.topic.split("/")[3]
        try:
            body = json.loads(msg.payload)
            csr = x509.load_pem_x509_csr(body["csr"].encode())
            if not csr.is_signature_valid:
                raise ValueError("bad CSR signature")
            cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            if cn != gw:
                raise ValueError(f"CN {cn} is not the gateway {gw}")
            now = datetime.datetime.utcnow()
            name = a.cn_override or cn
            cert = (x509.CertificateBuilder()
                    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                    .issuer_name(ca.subject).public_key(csr.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - datetime.timedelta(minutes=5))
                    .not_valid_after(now + datetime.timedelta(days=1))
                    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                    .sign(ca_key, hashes.SHA256()))
            pem = cert.public_bytes(serialization.Encoding.PEM).decode()
            c.publish(msg.topic[:-len("/csr")] + "/cert", json.dumps({"cert": pem}), qos=1)
            print("SIGNED", gw, flush=True)
        except Exception as e:  # pylint: disable=broad-except
            print("REFUSED", gw, e, flush=True)

    c = mqtt.Client(client_id="provisioning-service", protocol=mqtt.MQTTv5)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(a.cafile)
    ctx.load_cert_chain(a.cert, a.key)
    c.tls_set_context(ctx)
    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.connect("127.0.0.1", a.port, keepalive=30)
    try:
        c.loop_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
