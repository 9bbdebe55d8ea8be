#!/usr/bin/env node
/* server.js — a node-opcua 2.182.2 server (an OPC UA stack that is not ours)
 * as the test peer for fieldbridge's OPC UA driver.
 *
 * Usage: node server.js --port 26543 [--pki DIR] [--chunk 8192] [--max-msg 0]
 *        [--max-read 0] [--lifetime MS] [--many N] [--tick MS] [--strict-users]
 *        [--many-tick MS --many-change K] [--strict-clients] [--cert PEM --key PEM --app-uri URI]
 *        [--password P]
 *   --strict-users  user certificates (X509IdentityToken) must be in
 *                   PKI/user/trusted/certs (otherwise any is accepted)
 *   --strict-clients client application certificates must be in
 *                   PKI/server/trusted/certs, or be issued by a CA there
 *                   (mutual authentication; otherwise any is accepted)
 *   --cert, --key   the server's application certificate (PEM; the file may
 *                   hold the chain: certificate first, then its CAs) and key,
 *                   instead of the self-signed one node-opcua makes;
 *                   --app-uri: the application URI it carries
 *   --password      the password of the user "operator" (default "secret")
 *   --many-tick     every MS ms, set the next K of the --many items (round
 *                   robin) to the current time in ms since 1970 (Double), so
 *                   a subscriber can compute the change-to-delivery latency;
 *                   prints "CHANGES <total> <ms>" on stdout every second
 * Binds 127.0.0.1 only and prints "READY <port>" on stdout when listening.
 *
 * Address space (namespace 1, node ids "ns=1;s=NAME"):
 *   Demo/Scalars/{Boolean,SByte,Byte,Int16,UInt16,Int32,UInt32,Int64,UInt64,
 *                 Float,Double,String,DateTime,Guid,ByteString,LocalizedText,
 *                 NodeId,StatusCode}   writable scalars of every built-in type
 *   Demo/Arrays/{DoubleArray,Int32Array,StringArray}
 *   Demo/ReadOnly   a Double the client may read but not write
 *   Demo/Level      an AnalogItem (Double) with EURange 0..100, for percent deadbands
 *   Demo/Counter    UInt32 incremented every --tick ms (0 = never)
 *   Demo/Deep/Level2/Level3/Leaf   for browse paths
 *   Demo/Many/Item0000..  --many Double variables, and ManyArray: a Double[--many]
 *   Demo/SetValue(name String, value String) a method that sets a variable
 * Users: anonymous, "operator" / "secret" (--password; user name token), X.509 user
 * certificates (see --strict-users).  Security policies: None,
 * Basic256Sha256, Aes128_Sha256_RsaOaep.
 *
 * Control on stdin, one JSON object per line, one JSON answer per line:
 *   {"op":"set","name":"Double","value":3.5}   → {"ok":true}
 *   {"op":"get","name":"Double"}               → {"ok":true,"value":...}
 *   {"op":"sessions"}                          → {"ok":true,"sessions":N}
 *   {"op":"logins"}                            → {"ok":true,"ok_logins":N,"refused":N} user-name
 *                                                 logins checked so far (a wrong password is refused)
 * Install: cd tests/peers/opcua && npm ci
 */
'use strict';
// Node 18 (Debian 12's nodejs) has WebCrypto only as require('crypto').webcrypto;
// node-opcua 2.182 draws its random bytes from the global that Node 19+ defines.
if (!globalThis.crypto) globalThis.crypto = require('crypto').webcrypto;
const path = require('path');
const readline = require('readline');
const opcua = require('node-opcua');
const { DataType, Variant, VariantArrayType, StatusCodes, OPCUACertificateManager } = opcua;

const args = process.argv.slice(2);
const opt = { port: 26543, pki: path.join(__dirname, 'pki'), chunk: 0, maxMsg: 0, maxRead: 0,
              lifetime: 0, many: 0, tick: 0, strictUsers: false, manyTick: 0, manyChange: 0,
              strictClients: false, cert: '', key: '', appUri: '', password: 'secret' };
for (let i = 0; i < args.length; i++) {
    const a = args[i], v = args[i + 1];
    if (a === '--port') { opt.port = parseInt(v, 10); i++; }
    else if (a === '--pki') { opt.pki = v; i++; }
    else if (a === '--chunk') { opt.chunk = parseInt(v, 10); i++; }
    else if (a === '--max-msg') { opt.maxMsg = parseInt(v, 10); i++; }
    else if (a === '--max-read') { opt.maxRead = parseInt(v, 10); i++; }
    else if (a === '--lifetime') { opt.lifetime = parseInt(v, 10); i++; }
    else if (a === '--many') { opt.many = parseInt(v, 10); i++; }
    else if (a === '--tick') { opt.tick = parseInt(v, 10); i++; }
    else if (a === '--strict-users') { opt.strictUsers = true; }
    else if (a === '--many-tick') { opt.manyTick = parseInt(v, 10); i++; }
    else if (a === '--many-change') { opt.manyChange = parseInt(v, 10); i++; }
    else if (a === '--strict-clients') { opt.strictClients = true; }
    else if (a === '--cert') { opt.cert = v; i++; }
    else if (a === '--key') { opt.key = v; i++; }
    else if (a === '--app-uri') { opt.appUri = v; i++; }
    else if (a === '--password') { opt.password = v; i++; }
}

const SCALARS = {
    Boolean: [DataType.Boolean, true],
    SByte: [DataType.SByte, -5],
    Byte: [DataType.Byte, 200],
    Int16: [DataType.Int16, -30000],
    UInt16: [DataType.UInt16, 60000],
    Int32: [DataType.Int32, -2000000000],
    UInt32: [DataType.UInt32, 4000000000],
    Int64: [DataType.Int64, to64('-4294967298')],
    UInt64: [DataType.UInt64, to64('9223372036854775809')],
    Float: [DataType.Float, 21.5],
    Double: [DataType.Double, 3.141592653589793],
    String: [DataType.String, 'hello wörld'],
    DateTime: [DataType.DateTime, new Date(Date.UTC(2024, 2, 1, 12, 30, 45, 123))],
    Guid: [DataType.Guid, '72962B91-FA75-4AE6-8D28-B404DC7DAF63'],
    ByteString: [DataType.ByteString, Buffer.from('deadbeef', 'hex')],
    LocalizedText: [DataType.LocalizedText, { locale: 'en', text: 'Pump' }],
    NodeId: [DataType.NodeId, opcua.resolveNodeId('ns=1;s=Double')],
    StatusCode: [DataType.StatusCode, StatusCodes.BadOutOfRange],
};

const vars = {};

/* node-opcua holds 64-bit integers as [high u32, low u32] */
function to64(v) {
    let b = BigInt(v);
    if (b < 0n) b += 1n << 64n;
    return [Number(b >> 32n), Number(b & 0xffffffffn)];
}
function from64(v, signed) {
    let b = (BigInt(v[0]) << 32n) | BigInt(v[1]);
    if (signed && b >= 1n << 63n) b -= 1n << 64n;
    return b.toString();
}

function addVar(ns, parent, name, dataType, value, extra) {
    const o = {
        componentOf: parent, browseName: name, nodeId: `s=${name}`, dataType,
        value: new Variant({ dataType: DataType[dataType], value, ...(extra || {}) }),
        accessLevel: 'CurrentRead | CurrentWrite', userAccessLevel: 'CurrentRead | CurrentWrite',
        minimumSamplingInterval: 50,
    };
    if (extra && extra.arrayType === VariantArrayType.Array) o.valueRank = 1;
    const v = ns.addVariable(o);
    vars[name] = v;
    return v;
}

const logins = { ok: 0, refused: 0 };

async function main() {
    const serverCertificateManager = new OPCUACertificateManager({
        automaticallyAcceptUnknownCertificate: !opt.strictClients, rootFolder: path.join(opt.pki, 'server'),
    });
    await serverCertificateManager.initialize();
    const userCertificateManager = new OPCUACertificateManager({
        automaticallyAcceptUnknownCertificate: !opt.strictUsers, rootFolder: path.join(opt.pki, 'user'),
    });
    await userCertificateManager.initialize();
    const limits = {};
    if (opt.maxRead) limits.maxNodesPerRead = opt.maxRead;
    const serverOpts = {
        port: opt.port, host: '127.0.0.1', hostname: '127.0.0.1', alternateHostname: [],
        serverCertificateManager, userCertificateManager,
        securityPolicies: [opcua.SecurityPolicy.None, opcua.SecurityPolicy.Basic256Sha256,
                           opcua.SecurityPolicy.Aes128_Sha256_RsaOaep],
        securityModes: [opcua.MessageSecurityMode.None, opcua.MessageSecurityMode.Sign,
                        opcua.MessageSecurityMode.SignAndEncrypt],
        allowAnonymous: true,
        userManager: {
            isValidUser: (u, p) => {
                const ok = u === 'operator' && p === opt.password;
                if (ok) logins.ok++; else logins.refused++;
                return ok;
            },
        },
        serverCapabilities: { operationLimits: limits },
        buildInfo: { productName: 'fieldbridge-test-peer' },
    };
    if (opt.lifetime) serverOpts.defaultSecureTokenLifetime = opt.lifetime;
    if (opt.cert) { serverOpts.certificateFile = opt.cert; serverOpts.privateKeyFile = opt.key; }
    if (opt.appUri) serverOpts.serverInfo = { applicationUri: opt.appUri };
    if (opt.chunk || opt.maxMsg) {
        serverOpts.transportSettings = {
            adjustTransportLimits: (h) => ({
                ...h,
                receiveBufferSize: opt.chunk ? Math.min(h.receiveBufferSize, opt.chunk) : h.receiveBufferSize,
                sendBufferSize: opt.chunk ? Math.min(h.sendBufferSize, opt.chunk) : h.sendBufferSize,
                maxMessageSize: opt.maxMsg ? opt.maxMsg : h.maxMessageSize,
            }),
        };
    }
    const server = new opcua.OPCUAServer(serverOpts);
    await server.initialize();
    const as = server.engine.addressSpace;
    const ns = as.getOwnNamespace();
    const demo = ns.addFolder(as.rootFolder.objects, { browseName: 'Demo', nodeId: 's=Demo' });
    const scalars = ns.addFolder(demo, { browseName: 'Scalars', nodeId: 's=Scalars' });
    for (const [name, [dt, value]] of Object.entries(SCALARS)) addVar(ns, scalars, name, DataType[dt], value, { arrayType: VariantArrayType.Scalar });
    const arrays = ns.addFolder(demo, { browseName: 'Arrays', nodeId: 's=Arrays' });
    addVar(ns, arrays, 'DoubleArray', 'Double', new Float64Array([1.5, 2.5, 3.5, 4.5]), { arrayType: VariantArrayType.Array });
    addVar(ns, arrays, 'Int32Array', 'Int32', new Int32Array([10, -20, 30]), { arrayType: VariantArrayType.Array });
    addVar(ns, arrays, 'StringArray', 'String', ['a', 'bb', 'ccc'], { arrayType: VariantArrayType.Array });
    const ro = ns.addVariable({
        componentOf: demo, browseName: 'ReadOnly', nodeId: 's=ReadOnly', dataType: 'Double',
        value: new Variant({ dataType: DataType.Double, value: 42.0 }),
        accessLevel: 'CurrentRead', userAccessLevel: 'CurrentRead',
    });
    vars.ReadOnly = ro;
    vars.Level = ns.addAnalogDataItem({
        componentOf: demo, browseName: 'Level', nodeId: 's=Level', dataType: 'Double',
        engineeringUnitsRange: { low: 0, high: 100 }, minimumSamplingInterval: 50,
        value: new Variant({ dataType: DataType.Double, value: 1 }),
        accessLevel: 'CurrentRead | CurrentWrite', userAccessLevel: 'CurrentRead | CurrentWrite',
    });
    const counter = addVar(ns, demo, 'Counter', 'UInt32', 0);
    let n = 0;
    if (opt.tick) setInterval(() => counter.setValueFromSource(new Variant({ dataType: DataType.UInt32, value: ++n })), opt.tick);
    let parent = demo;
    for (const lvl of ['Deep', 'Level2', 'Level3']) parent = ns.addFolder(parent, { browseName: lvl, nodeId: `s=${lvl}` });
    addVar(ns, parent, 'Leaf', 'Int32', 7);
    if (opt.many) {
        const many = ns.addFolder(demo, { browseName: 'Many', nodeId: 's=Many' });
        for (let i = 0; i < opt.many; i++) addVar(ns, many, `Item${String(i).padStart(4, '0')}`, 'Double', i);
        if (opt.manyTick && opt.manyChange) {
            let next = 0, total = 0;
            /* the changes really made (timers run late when the event loop is saturated) */
            setInterval(() => process.stdout.write(`CHANGES ${total} ${Date.now()}\n`), 1000);
            setInterval(() => {
                const now = Date.now();
                total += opt.manyChange;
                for (let k = 0; k < opt.manyChange; k++) {
                    vars[`Item${String(next).padStart(4, '0')}`].setValueFromSource(
                        new Variant({ dataType: DataType.Double, value: now }));
                    next = (next + 1) % opt.many;
                }
            }, opt.manyTick);
        }
        addVar(ns, many, 'ManyArray', 'Double', Float64Array.from({ length: opt.many }, (_, i) => i),
               { arrayType: VariantArrayType.Array });
    }
    const method = ns.addMethod(demo, {
        browseName: 'SetValue', nodeId: 's=SetValue',
        inputArguments: [{ name: 'name', dataType: DataType.String }, { name: 'value', dataType: DataType.String }],
        outputArguments: [],
    });
    method.bindMethod((inputs, ctx, cb) => {
        let ok = false;
        try { ok = setFromText(inputs[0].value, JSON.parse(inputs[1].value)); } catch (e) { ok = false; }
        cb(null, { statusCode: ok ? StatusCodes.Good : StatusCodes.BadNodeIdUnknown, outputArguments: [] });
    });
    await server.start();
    process.stdout.write(`READY ${opt.port}\n`);

    function setFromText(name, value) {
        const v = vars[name];
        if (!v) return false;
        const dt = v.getBasicDataType();
        const isArr = Array.isArray(value);
        if ((dt === DataType.Int64 || dt === DataType.UInt64) && !isArr) value = to64(value);
        v.setValueFromSource(new Variant({ dataType: dt, value, arrayType: isArr ? VariantArrayType.Array : VariantArrayType.Scalar }));
        return true;
    }
    const rl = readline.createInterface({ input: process.stdin });
    rl.on('line', (line) => {
        let ans;
        try {
            const r = JSON.parse(line);
            if (r.op === 'set') ans = { ok: setFromText(r.name, r.value) };
            else if (r.op === 'get') {
                const dv = vars[r.name].readValue();
                let val = dv.value.value;
                const dt = dv.value.dataType;
                if (dt === DataType.Int64 || dt === DataType.UInt64) val = from64(val, dt === DataType.Int64);
                if (val && typeof val === 'object' && val.length !== undefined && !(typeof val === 'string')) val = Array.from(val);
                if (val instanceof Date) val = val.toISOString();
                ans = { ok: true, value: (typeof val === 'object' && val !== null && !Array.isArray(val)) ? val.toString() : val };
            } else if (r.op === 'sessions') ans = { ok: true, sessions: server.currentSessionCount };
            else if (r.op === 'logins') ans = { ok: true, ok_logins: logins.ok, refused: logins.refused };
            else ans = { ok: false, error: 'unknown op' };
        } catch (e) { ans = { ok: false, error: String(e) }; }
        process.stdout.write(JSON.stringify(ans) + '\n');
    });
    rl.on('close', async () => { await server.shutdown(100); process.exit(0); });
    process.on('SIGTERM', async () => { await server.shutdown(100); process.exit(0); });
}
main().catch((e) => { process.stderr.write(`server failed: ${e.stack}\n`); process.exit(1); });
