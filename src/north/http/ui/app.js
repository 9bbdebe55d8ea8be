// fieldbridge web page: devices with NE107, the alarms that are not normal
// (acknowledged here), a live tag table with sparklines, a write dialog,
// sink/buffer state and gateway health, from the HTTP API
// (docs/http-api.md).  Live updates come from GET /api/v1/events, read with
// fetch() rather than EventSource so the token travels in the Authorization
// header and never in a URL.  Every text from the gateway is put into the
// page with textContent, never as HTML.
'use strict';

const HISTORY_MS = 5 * 60 * 1000; // sparkline window
const HISTORY_MAX = 600;          // points per tag

const st = {
  token: sessionStorage.getItem('fb-token') || localStorage.getItem('fb-token') || '',
  who: null,
  devices: [],        // from /api/v1/devices
  selected: null,     // device name
  tags: new Map(),    // tag name -> tag object of the selected device
  values: new Map(),  // "dev/tag" -> {v, q, reason, ts}
  history: new Map(), // "dev/tag" -> [[ms, number], ...]
  lastId: null,       // Last-Event-ID for a resumed stream
  stream: null,       // AbortController of the event stream
  writeTag: null,
  alarms: [],         // from /api/v1/alarms: each device's summary
  alarmTimer: null,   // a reload of the alarms after events, coalesced
};

const $ = (id) => document.getElementById(id);
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

// ------------------------------------------------------------------ API
async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (st.token) headers.Authorization = 'Bearer ' + st.token;
  const r = await fetch(path, Object.assign({}, opts, { headers, cache: 'no-store' }));
  let body = null;
  const ct = r.headers.get('content-type') || '';
  if (ct.includes('json')) body = await r.json().catch(() => null);
  if (r.status === 401 && !opts.noSignin) openSignin('Signing in is needed: ' + ((body && body.error) || 'no token'));
  return { status: r.status, ok: r.ok, body };
}

// ----------------------------------------------------------- formatting
function fmtTime(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  if (isNaN(d)) return ts;
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}
function fmtValue(v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'number') {
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a !== 0 && (a >= 1e6 || a < 1e-3) ? v.toExponential(4) : String(Math.round(v * 1e4) / 1e4);
  }
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  return String(v);
}
function fmtDuration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + m + 'm ' + (s % 60) + 's';
}
function fmtBytes(n) {
  const u = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + u[i];
}

// ------------------------------------------------------------- sign in
function openSignin(msg) {
  const d = $('signin');
  $('signin-msg').textContent = msg || '';
  $('signin-msg').className = 'msg' + (msg ? ' err' : '');
  if (!d.open) d.showModal();
  $('signin-token').focus();
}
async function signIn(token, remember) {
  st.token = token.trim();
  sessionStorage.removeItem('fb-token');
  localStorage.removeItem('fb-token');
  (remember ? localStorage : sessionStorage).setItem('fb-token', st.token);
  const r = await api('/api/v1/whoami', { noSignin: true });
  if (!r.ok) {
    openSignin((r.body && r.body.error) || 'sign-in failed (' + r.status + ')');
    return false;
  }
  $('signin').close();
  await start();
  return true;
}

function showWho() {
  const w = st.who;
  $('who').textContent = w ? `${w.user} · ${w.role}${w.can_write ? '' : w.role === 'operator' ? ' (writes need TLS)' : ''}` : '';
  $('signin-open').textContent = w && w.user !== 'anonymous' ? 'Switch user' : 'Sign in';
}

// --------------------------------------------------------- gateway panel
function renderGateway(s) {
  if (!s) return;
  $('gw-id').textContent = s.gateway || 'fieldbridge';
  document.title = (s.gateway || 'fieldbridge') + ' · fieldbridge';
  const h = $('health');
  h.textContent = s.health === 'ok' ? 'healthy' : s.health || '?';
  h.className = 'pill ' + (s.health === 'ok' ? 'ok' : 'degraded');
  const f = $('gw-facts');
  f.replaceChildren();
  const add = (k, v) => { f.append(el('dt', null, k), el('dd', null, v)); };
  add('Version', s.version);
  add('Up', fmtDuration(s.uptime_s || 0));
  add('Clock', s.clock_synced ? 'synchronised' : 'NOT synchronised');
  add('CPU', (s.cpu_s || 0).toFixed(1) + ' s');
  add('Memory', fmtBytes(s.rss_bytes || 0));
  const sinks = $('sinks');
  sinks.replaceChildren();
  for (const [name, k] of Object.entries(s.sinks || {})) {
    const c = el('div', 'sink');
    c.append(el('div', 'name', `${name} · ${k.connected ? 'connected' : 'not connected'}`));
    c.append(el('div', 'detail', `sent ${k.sent} · queued ${k.queued} · dropped ${k.dropped}`));
    if (k.buffer) {
      const b = k.buffer;
      c.append(el('div', 'detail', `buffer: ${b.records} records, ${fmtBytes(b.bytes)}, oldest ${b.oldest_age_s.toFixed(0)} s` +
        `, draining ${b.drain_rate.toFixed(0)}/s${b.degraded ? ' — DEGRADED (memory only)' : ''}`));
    }
    sinks.append(c);
  }
  // the status carries each device's state and NE107 too
  for (const d of st.devices) {
    const x = (s.devices || {})[d.name];
    if (x) { d.state = x.state; d.ne107 = x.ne107; d.counters.requests = x.requests; d.counters.errors = x.errors; d.rtt_ms = x.rtt_ms; }
  }
  renderDevices();
}

// -------------------------------------------------------------- devices
function renderDevices() {
  const box = $('devices');
  box.replaceChildren();
  for (const d of st.devices) {
    const b = el('button', 'device ne-' + String(d.ne107).replace(/ /g, '-'));
    b.type = 'button';
    b.setAttribute('role', 'listitem');
    b.setAttribute('aria-pressed', d.name === st.selected ? 'true' : 'false');
    b.dataset.device = d.name;
    b.append(el('span', 'name', d.name));
    b.append(el('span', 'ne', `${d.ne107} · ${d.state}`));
    b.append(el('span', 'counters', `${d.driver} · ${d.tags} tags · ${d.counters.requests} req · ${d.counters.errors} err · ${Number(d.rtt_ms).toFixed(1)} ms`));
    b.addEventListener('click', () => selectDevice(d.name));
    box.append(b);
  }
}

async function loadDevices() {
  const r = await api('/api/v1/devices');
  if (!r.ok) return;
  st.devices = r.body.devices;
  if (!st.selected && st.devices.length) st.selected = st.devices[0].name;
  renderDevices();
}

async function selectDevice(name) {
  st.selected = name;
  renderDevices();
  await loadTags();
}

// ----------------------------------------------------------------- tags
function key(dev, tag) { return dev + '/' + tag; }

function remember(dev, tag, val) {
  const k = key(dev, tag);
  st.values.set(k, val);
  if (typeof val.v !== 'number' && typeof val.v !== 'boolean') return;
  const t = val.ts ? Date.parse(val.ts) : Date.now();
  let h = st.history.get(k);
  if (!h) st.history.set(k, (h = []));
  if (h.length && h[h.length - 1][0] === t) return;
  h.push([t, Number(val.v)]);
  const cut = t - HISTORY_MS;
  while (h.length > HISTORY_MAX || (h.length && h[0][0] < cut)) h.shift();
}

function sparkline(points) {
  const NS = 'http://www.w3.org/2000/svg', w = 120, hgt = 28;
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('width', w);
  svg.setAttribute('height', hgt);
  svg.setAttribute('viewBox', `0 0 ${w} ${hgt}`);
  if (points && points.length > 1) {
    const t0 = points[0][0], t1 = points[points.length - 1][0];
    let lo = Infinity, hi = -Infinity;
    for (const p of points) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); }
    const span = hi - lo || 1, tspan = t1 - t0 || 1;
    const pl = document.createElementNS(NS, 'polyline');
    pl.setAttribute('points', points.map((p) =>
      `${((p[0] - t0) / tspan * (w - 2) + 1).toFixed(1)},${(hgt - 2 - (p[1] - lo) / span * (hgt - 4)).toFixed(1)}`).join(' '));
    svg.append(pl);
  }
  return svg;
}

function qualityBadge(val) {
  const s = el('span', 'q q-' + (val ? val.q : 'bad'), val ? val.q : 'bad');
  if (val && val.reason) s.title = val.reason;
  return s;
}

function fillRow(tr, t) {
  const val = st.values.get(key(st.selected, t.name));
  const cells = tr.children;
  cells[1].textContent = val ? fmtValue(val.v === null && val.raw !== undefined ? val.raw : val.v) : '—';
  cells[1].title = val && val.reason ? val.reason : '';
  cells[3].replaceChildren(qualityBadge(val));
  cells[4].textContent = val ? fmtTime(val.ts) : '—';
  cells[4].title = val && val.ts ? val.ts : '';
  cells[5].replaceChildren(sparkline(st.history.get(key(st.selected, t.name))));
}

function renderTags() {
  const tb = $('tags').tBodies[0];
  tb.replaceChildren();
  const f = $('filter').value.trim().toLowerCase();
  let shown = 0;
  for (const t of st.tags.values()) {
    if (f && !t.name.toLowerCase().includes(f)) continue;
    shown++;
    const tr = el('tr');
    tr.dataset.tag = t.name;
    const name = el('td', 'name', t.name);
    name.title = `${t.addr} · ${t.type}${t.range && (t.range[0] !== null || t.range[1] !== null) ? ` · range ${t.range[0] ?? '−∞'}…${t.range[1] ?? '∞'}` : ''}`;
    tr.append(name, el('td', 'num v'), el('td', 'unit', t.unit || ''), el('td', 'qual'), el('td', 't'), el('td', 'spark'));
    const act = el('td', 'act');
    if (t.access.includes('w')) {
      const b = el('button', 'write', 'Write…');
      b.type = 'button';
      b.addEventListener('click', () => openWrite(t));
      act.append(b);
    }
    tr.append(act);
    fillRow(tr, t);
    tb.append(tr);
  }
  $('tags-h').textContent = st.selected ? `Tags of ${st.selected}` : 'Tags';
  $('tags-hint').textContent = st.tags.size ? `${shown} of ${st.tags.size} tags · sparklines show what arrived since this page was opened (up to 5 minutes)` : '';
}

async function loadTags() {
  if (!st.selected) return;
  const r = await api('/api/v1/devices/' + encodeURIComponent(st.selected) + '/tags');
  if (!r.ok) return;
  st.tags = new Map(r.body.tags.map((t) => [t.name, t]));
  for (const t of r.body.tags) remember(st.selected, t.name, { v: t.v, q: t.q, reason: t.reason, raw: t.raw, ts: t.ts });
  renderTags();
}

// --------------------------------------------------------------- alarms
// The summary (GET /api/v1/alarms) is the truth; an `alarm` event only says
// that it changed, so the table is reloaded (at most every 250 ms).
async function loadAlarms() {
  const r = await api('/api/v1/alarms');
  if (!r.ok || !r.body) return;
  st.alarms = r.body.devices || [];
  renderAlarms();
}
function alarmsChanged() {
  if (st.alarmTimer) return;
  st.alarmTimer = setTimeout(() => { st.alarmTimer = null; loadAlarms(); }, 250);
}
const ALARM_STATE = {
  active_unacked: 'ACTIVE · not acknowledged', active_acked: 'active · acknowledged',
  cleared_unacked: 'cleared · not acknowledged', normal: 'normal',
};
function renderAlarms() {
  const panel = $('alarms-panel');
  panel.hidden = st.alarms.length === 0; // no alarms configured
  const tb = $('alarms').tBodies[0];
  tb.replaceChildren();
  let unacked = 0, rows = 0;
  const canAck = st.who && st.who.role === 'operator' && st.who.can_write;
  for (const d of st.alarms) {
    unacked += d.unacked || 0;
    for (const a of d.alarms || []) {
      rows++;
      const tr = el('tr', 'alarm' + (a.active ? ' active' : '') + (a.acked ? '' : ' unacked'));
      tr.dataset.device = d.device;
      tr.dataset.alarm = a.alarm;
      let state = ALARM_STATE[a.state] || a.state;
      if (a.shelved) state += a.until ? ` · shelved until ${fmtTime(a.until)}` : ' · shelved';
      if (a.suppressed) state += ' · suppressed';
      const since = el('td', 't', fmtTime(a.since));
      since.title = a.since || '';
      tr.append(el('td', 'name', d.device), el('td', 'name', a.alarm), el('td', 'state', state),
        el('td', 'prio prio-' + a.priority, a.priority), el('td', 'num', fmtValue(a.value)), since,
        el('td', 'msg', a.message || ''));
      const act = el('td', 'act');
      if (!a.acked) {
        const b = el('button', 'ack', 'Acknowledge');
        b.type = 'button';
        b.disabled = !canAck;
        if (!canAck) b.title = 'operator role (and TLS, unless plaintext writes are allowed) needed';
        b.addEventListener('click', () => ackAlarm(d.device, a.alarm, b));
        act.append(b);
      }
      tr.append(act);
      tb.append(tr);
    }
  }
  $('alarms-hint').textContent = rows ? '' : 'No alarm is active, unacknowledged or shelved.';
  const c = $('alarm-count');
  c.hidden = unacked === 0;
  c.textContent = `${unacked} alarm${unacked === 1 ? '' : 's'} to acknowledge`;
  c.className = 'pill degraded';
}
async function ackAlarm(dev, alarm, button) {
  button.disabled = true;
  const body = JSON.stringify({ id: 'ui-' + (++writeSeq), ack: [alarm] });
  const r = await api('/api/v1/devices/' + encodeURIComponent(dev) + '/write',
    { method: 'POST', body, headers: { 'Content-Type': 'application/json' }, noSignin: true }).catch(() => null);
  const b = (r && r.body) || {};
  if (r && r.ok && b.ok) { await loadAlarms(); return; }
  const per = b.results && b.results[alarm];
  button.disabled = false;
  button.textContent = 'Refused: ' + ((per && per.error) || b.error || (r ? 'HTTP ' + r.status : 'no answer'));
  button.classList.add('refused');
}

// ------------------------------------------------------------- events
function onValues(m) {
  const dev = m.device;
  for (const [tag, val] of Object.entries(m.values || {})) {
    if (!val.ts) val.ts = m.ts;
    const before = st.values.get(key(dev, tag));
    const changed = !before || before.v !== val.v || before.q !== val.q;
    remember(dev, tag, val);
    if (dev !== st.selected) continue;
    const t = st.tags.get(tag);
    const tr = document.querySelector(`#tags tbody tr[data-tag="${CSS.escape(tag)}"]`);
    if (t && tr) {
      fillRow(tr, t);
      if (changed) {
        tr.classList.remove('flash');
        void tr.offsetWidth; // restart the highlight
        tr.classList.add('flash');
        setTimeout(() => tr.classList.remove('flash'), 400);
      }
    }
  }
}

function onStatus(m) {
  const d = st.devices.find((x) => x.name === m.device);
  if (!d) return;
  d.state = m.state;
  if (m.state === 'offline') d.ne107 = 'Failure';
  renderDevices();
}

function handleEvent(ev) {
  let data = null;
  try { data = JSON.parse(ev.data); } catch (e) { return; }
  if (ev.event === 'values') onValues(data);
  else if (ev.event === 'status') onStatus(data);
  else if (ev.event === 'gateway') renderGateway(data);
  else if (ev.event === 'alarm') alarmsChanged();
  else if (ev.event === 'hello' && !data.resumed) { loadDevices().then(loadTags); loadAlarms(); }
}

function setLive(on, text) {
  const l = $('live');
  l.textContent = text;
  l.className = 'pill ' + (on ? 'live' : 'off');
}

// Server-Sent Events over fetch: frames are separated by a blank line;
// "event:", "data:" and "id:" lines; ":" starts a comment.
async function streamEvents() {
  if (st.stream) st.stream.abort();
  const ctl = new AbortController();
  st.stream = ctl;
  let delay = 1000;
  while (!ctl.signal.aborted) {
    try {
      const headers = { Accept: 'text/event-stream' };
      if (st.token) headers.Authorization = 'Bearer ' + st.token;
      if (st.lastId) headers['Last-Event-ID'] = st.lastId;
      const r = await fetch('/api/v1/events', { headers, signal: ctl.signal, cache: 'no-store' });
      if (r.status === 401) { setLive(false, 'signed out'); openSignin('the token was not accepted'); return; }
      if (!r.ok || !r.body) throw new Error('HTTP ' + r.status);
      setLive(true, 'live');
      delay = 1000;
      const rd = r.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      let cur = { event: 'message', data: '', id: null };
      for (;;) {
        const { value, done } = await rd.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, '');
          buf = buf.slice(nl + 1);
          if (line === '') {
            if (cur.data) {
              if (cur.id) st.lastId = cur.id;
              handleEvent(cur);
            }
            cur = { event: 'message', data: '', id: null };
          } else if (line[0] !== ':') {
            const c = line.indexOf(':');
            const f = c < 0 ? line : line.slice(0, c);
            const v = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
            if (f === 'event') cur.event = v;
            else if (f === 'data') cur.data += (cur.data ? '\n' : '') + v;
            else if (f === 'id') cur.id = v;
          }
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    setLive(false, 'reconnecting');
    await new Promise((res) => setTimeout(res, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

// ---------------------------------------------------------------- write
function openWrite(t) {
  st.writeTag = t;
  const val = st.values.get(key(st.selected, t.name));
  $('write-tag').textContent = `${st.selected} / ${t.name}`;
  const range = t.range && (t.range[0] !== null || t.range[1] !== null) ? `, allowed ${t.range[0] ?? '−∞'} … ${t.range[1] ?? '∞'}` : '';
  $('write-info').textContent = `now ${val ? fmtValue(val.v) : '—'}${t.unit ? ' ' + t.unit : ''} · ${t.type}${range}`;
  const role = $('write-role');
  const w = st.who;
  if (!w || w.role !== 'operator') {
    role.hidden = false;
    role.textContent = `Signed in as ${w ? w.role : 'nobody'}: the gateway refuses writes from this role (operator needed).`;
  } else if (!w.can_write) {
    role.hidden = false;
    role.textContent = 'This gateway refuses writes over plain HTTP (TLS needed).';
  } else {
    role.hidden = true;
  }
  const wrap = $('write-input-wrap');
  wrap.replaceChildren();
  let input;
  if (t.type === 'bool') {
    input = el('select');
    for (const o of ['true', 'false']) { const op = el('option', null, o); op.value = o; input.append(op); }
    if (val && val.v === false) input.value = 'false';
  } else {
    input = el('input');
    input.type = t.type === 'string' ? 'text' : 'number';
    if (input.type === 'number') {
      input.step = t.type.startsWith('float') ? 'any' : '1';
      if (t.range && t.range[0] !== null) input.min = t.range[0];
      if (t.range && t.range[1] !== null) input.max = t.range[1];
      input.inputMode = 'decimal';
    }
    if (val && val.v !== null && val.v !== undefined) input.value = val.v;
  }
  input.id = 'write-value';
  input.required = true;
  wrap.append(input);
  $('write-msg').textContent = '';
  $('write-msg').className = 'msg';
  $('write-submit').disabled = false;
  $('write').showModal();
  input.focus();
}

let writeSeq = 0;
async function submitWrite() {
  const t = st.writeTag;
  const raw = $('write-value').value;
  let v;
  if (t.type === 'bool') v = raw === 'true';
  else if (t.type === 'string') v = raw;
  else {
    v = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(v)) { showWriteMsg(false, 'enter a number'); return; }
  }
  $('write-submit').disabled = true;
  showWriteMsg(null, 'writing…');
  const body = JSON.stringify({ id: 'ui-' + (++writeSeq), write: { [t.name]: v } });
  let r;
  try {
    r = await api('/api/v1/devices/' + encodeURIComponent(st.selected) + '/write',
      { method: 'POST', body, headers: { 'Content-Type': 'application/json' }, noSignin: true });
  } catch (e) {
    showWriteMsg(false, 'no answer: ' + e.message);
    $('write-submit').disabled = false;
    return;
  }
  $('write-submit').disabled = false;
  const b = r.body || {};
  if (r.ok && b.ok) {
    showWriteMsg(true, `written: ${fmtValue(v)}`);
    setTimeout(() => { if ($('write').open) $('write').close(); }, 1200);
  } else {
    const per = b.results && b.results[t.name];
    const why = (per && per.error) || b.error || ('HTTP ' + r.status);
    showWriteMsg(false, `refused (${r.status}): ${why}`);
  }
}
function showWriteMsg(ok, text) {
  const m = $('write-msg');
  m.textContent = text;
  m.className = 'msg' + (ok === true ? ' ok' : ok === false ? ' err' : '');
}

// ----------------------------------------------------------------- start
async function start() {
  const w = await api('/api/v1/whoami');
  if (!w.ok) { showWho(); return; }
  st.who = w.body;
  showWho();
  await loadDevices();
  const s = await api('/api/v1/status');
  if (s.ok) renderGateway(s.body);
  await loadAlarms();
  await loadTags();
  streamEvents();
}

document.addEventListener('DOMContentLoaded', () => {
  $('signin-open').addEventListener('click', () => openSignin(''));
  $('signin-cancel').addEventListener('click', () => $('signin').close());
  $('signin-form').addEventListener('submit', (e) => { e.preventDefault(); signIn($('signin-token').value, $('signin-remember').checked); });
  $('write-cancel').addEventListener('click', () => $('write').close());
  $('write-form').addEventListener('submit', (e) => { e.preventDefault(); submitWrite(); });
  $('filter').addEventListener('input', renderTags);
  start();
});
