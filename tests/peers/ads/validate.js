// validate.js — checks tests/peers/ads_server.py with an ADS client that is
// not ours: the npm ads-client 2.1.0 (raw mode: no router port registration,
// which a PLC reached directly does not offer).  Prints one JSON object with
// everything it saw; tests/system/test_ads.py compares it with the server.
// usage: node validate.js PORT NET_ID [sum|nosum]
//   sum    (default) the server as a TwinCAT 3 PLC: sum commands and uploads work
//   nosum  the server started with --no-sum/--no-upload: ads-client must see
//          those services refused (with the server's code) and everything
//          else — single requests, symbol info by name, notifications — work
const { Client } = require('ads-client');

// the ADS error code a failed call carries (0 when it succeeded)
async function code(p) {
  try { await p; return 0; } catch (e) { return e.adsError ? e.adsError.errorCode : String(e.message); }
}

function symView(s) {
  return {
    name: s.name, type: s.type, size: s.size, indexGroup: s.indexGroup, adsDataType: s.adsDataType,
    flags: s.flags, arrayDimension: s.arrayDimension, arrayInfo: s.arrayInfo, typeGuid: s.typeGuid || null,
    attributes: s.attributes,
  };
}

async function main() {
  const [port, netId, mode] = [parseInt(process.argv[2], 10), process.argv[3], process.argv[4] || 'sum'];
  const c = new Client({
    targetAmsNetId: netId, targetAdsPort: 851, routerAddress: '127.0.0.1', routerTcpPort: port,
    localAmsNetId: '127.0.0.1.1.1', localAdsPort: 32750, rawClient: true, timeoutDelay: 3000,
    autoReconnect: false,
  });
  const out = { mode };
  await c.connect();
  out.deviceInfo = await c.readDeviceInfo();
  out.state = await c.readState();
  // handle by name: ads-client asks with read length 0xFFFFFFFF and parses
  // TwinCAT 3's extended reply (handle, size, decoration, type name)
  const h = await c.createVariableHandle('MAIN.nInt');
  out.handle = { size: h.size, dataType: h.dataType };
  out.nInt = (await c.readRawByHandle(h)).readInt16LE(0);
  const w = Buffer.alloc(2); w.writeInt16LE(-4321);
  await c.writeRawByHandle(h, w);
  out.nIntAfter = (await c.readRawByHandle(h)).readInt16LE(0);
  if (mode === 'sum') {
    // sum commands
    const hs = await c.createVariableHandleMulti(['MAIN.fTemperature', 'MAIN.sText', 'NoSuch.var']);
    out.multiHandles = hs.map(r => ({ ok: r.success, code: r.errorCode, size: r.handle && r.handle.size, type: r.handle && r.handle.dataType }));
    const rr = await c.readRawMulti([
      { indexGroup: 0xF005, indexOffset: hs[0].handle.handle, size: 4 },
      { indexGroup: 0xF005, indexOffset: hs[1].handle.handle, size: 81 },
      { indexGroup: 0xF005, indexOffset: 0x7FFFFFFF, size: 4 },
    ]);
    out.sumRead = rr.map(r => ({ ok: r.success, code: r.errorCode, value: r.value ? r.value.toString('hex') : null }));
    out.fTemperature = rr[0].value.readFloatLE(0);
    out.sText = rr[1].value.toString('latin1').split('\0')[0];
    const f = Buffer.alloc(4); f.writeFloatLE(-7.25);
    const wr = await c.writeRawMulti([{ indexGroup: 0xF005, indexOffset: hs[0].handle.handle, value: f }]);
    out.sumWrite = wr.map(r => ({ ok: r.success, code: r.errorCode }));
    out.fTemperatureAfter = (await c.readRawByHandle(hs[0].handle)).readFloatLE(0);
  } else {
    // the sum commands and the uploads are refused with the server's code
    out.sumHandlesErr = await code(c.createVariableHandleMulti(['MAIN.fTemperature']));
    out.sumReadErr = await code(c.readRawMulti([{ indexGroup: 0xF005, indexOffset: h.handle, size: 2 }]));
    out.sumWriteErr = await code(c.writeRawMulti([{ indexGroup: 0xF005, indexOffset: h.handle, value: w }]));
    out.symbolsErr = await code(c.getSymbols());
    out.uploadInfoErr = await code(c.readPlcUploadInfo());
  }
  // notifications: the first one carries the current value, a change another
  const seen = [];
  const sub = await c.subscribeRaw(0xF005, h.handle, 2, (d) => seen.push(d.value.readInt16LE(0)), 0, true);
  await new Promise(r => setTimeout(r, 300));
  const w2 = Buffer.alloc(2); w2.writeInt16LE(777);
  await c.writeRawByHandle(h, w2);
  await new Promise(r => setTimeout(r, 300));
  await sub.unsubscribe();
  out.notifications = seen;
  // symbol info by name (0xF009): one entry, the upload's layout (flags u16,
  // arrayDim u16, then the strings, array bounds, type GUID, attributes)
  out.info = {};
  for (const n of ['MAIN.aValues', 'MAIN.fTemperature', 'MAIN.stRecipe.sName', 'MAIN.nAlias']) {
    out.info[n] = symView(await c.getSymbol(n));
  }
  out.infoMissing = await code(c.getSymbol('NoSuch.var'));
  const name = Buffer.from('MAIN.aValues\0', 'latin1');
  out.infoRaw = (await c.readWriteRaw(0xF009, 0, 0xFFFF, name)).toString('hex');
  // raw areas: %MW10 (bytes), %MX12.3 (bit address 12*8+3), %IW0
  await c.writeRaw(0x4020, 10, Buffer.from([0x2a, 0x01]));
  out.mw10 = (await c.readRaw(0x4020, 10, 2)).toString('hex');
  await c.writeRaw(0x4021, 12 * 8 + 3, Buffer.from([1]));
  out.mb12 = (await c.readRaw(0x4020, 12, 1)).toString('hex');
  out.mx12_3 = (await c.readRaw(0x4021, 12 * 8 + 3, 1)).toString('hex');
  out.iw0 = (await c.readRaw(0xF020, 0, 2)).toString('hex');
  out.qx0_1 = (await c.readRaw(0xF031, 1, 1)).toString('hex');
  if (mode === 'sum') {
    // symbol and data-type uploads
    const syms = await c.getSymbols();
    out.symbolCount = Object.keys(syms).length;
    const s = syms['main.ftemperature'];
    out.symbol = { name: s.name, type: s.type, size: s.size, indexGroup: s.indexGroup };
    out.arraySymbol = symView(syms['main.avalues']);
    out.uploadFlags = symView(s);
    const dts = await c.getDataTypes();
    const st = dts['st_recipe'];
    out.dataType = { name: st.name, size: st.size, members: st.subItems.map(m => [m.name, m.type, m.offset, m.size]) };
  }
  await c.deleteVariableHandle(h);
  try { await c.readRawByHandle(h); out.afterDelete = 'read ok?!'; } catch (e) { out.afterDelete = e.adsError ? e.adsError.errorCode : String(e.message); }
  await c.disconnect();
  process.stdout.write(JSON.stringify(out) + '\n');
}
main().catch((e) => { process.stderr.write(String(e && e.stack || e) + '\n'); process.exit(1); });
