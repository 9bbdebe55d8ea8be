// ui_test.js — drives the gateway's web page in Debian's Chromium with
// playwright-core (tests/system/test_http_ui.py runs it).
//
//   node ui_test.js CONFIG.json
// CONFIG: {"url", "operator", "viewer", "changing": {"device","tag"},
//          "write": {"device","tag","value","refused_value"},
//          "alarm": {"device","alarm"} (active and unacknowledged at start), "shots": DIR}
// Steps: load the page, sign in as operator, see a value change live, write
// a setpoint through the dialog and see it confirmed and shown, acknowledge
// an active alarm, switch to a viewer token, try a write and see the gateway
// refuse it (and the viewer's acknowledge button disabled).  Screenshots go to
// shots/.  Prints one JSON line with what it saw; exits non-zero on failure.
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const out = { steps: [], console: [], foreign: [], shots: [] };
const step = (s) => { out.steps.push(s); process.stderr.write('ui_test: ' + s + '\n'); };

async function textOf(page, sel) { return (await page.locator(sel).first().textContent() || '').trim(); }

async function signIn(page, token) {
  if (!(await page.locator('#signin').evaluate((d) => d.open))) await page.click('#signin-open');
  await page.fill('#signin-token', token);
  await page.click('#signin-submit');
  await page.waitForFunction(() => !document.getElementById('signin').open, null, { timeout: 10000 });
}

async function selectDevice(page, dev) {
  await page.click(`#devices button[data-device="${dev}"]`);
  await page.waitForSelector(`#tags-h:text("Tags of ${dev}")`, { timeout: 10000 });
}

(async () => {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
  let rc = 0;
  try {
    // a tablet-sized window
    const ctx = await browser.newContext({ viewport: { width: 1180, height: 820 }, deviceScaleFactor: 1 });
    const page = await ctx.newPage();
    const origin = new URL(cfg.url).origin;
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') out.console.push(m.text()); });
    page.on('pageerror', (e) => out.console.push('pageerror: ' + e.message));
    page.on('request', (r) => { if (!r.url().startsWith(origin) && !r.url().startsWith('data:')) out.foreign.push(r.url()); });

    await page.goto(cfg.url, { waitUntil: 'domcontentloaded' });
    step('page loaded');
    // no anonymous access: the page asks for a token
    await page.waitForFunction(() => document.getElementById('signin').open, null, { timeout: 10000 });
    step('sign-in dialog shown');
    await signIn(page, cfg.operator);
    await page.waitForSelector('#who:text("operator")', { timeout: 10000 });
    step('signed in as operator');
    await page.waitForSelector('#live:text("live")', { timeout: 10000 });
    step('event stream live');

    // a simulated value changes while we watch
    const ch = cfg.changing;
    await selectDevice(page, ch.device);
    const cell = `#tags tbody tr[data-tag="${ch.tag}"] td.v`;
    await page.waitForSelector(cell, { timeout: 10000 });
    const first = await textOf(page, cell);
    await page.waitForFunction(([sel, v]) => {
      const e = document.querySelector(sel);
      return e && e.textContent.trim() !== v && e.textContent.trim() !== '—';
    }, [cell, first], { timeout: 15000 });
    const second = await textOf(page, cell);
    out.changed = [first, second];
    step(`value of ${ch.device}/${ch.tag} changed live: ${first} -> ${second}`);
    // its sparkline has points
    await page.waitForSelector(`#tags tbody tr[data-tag="${ch.tag}"] svg.spark polyline`, { timeout: 15000 });
    step('sparkline drawn');

    // write a setpoint as operator
    const w = cfg.write;
    await selectDevice(page, w.device);
    await page.click(`#tags tbody tr[data-tag="${w.tag}"] button.write`);
    await page.waitForSelector('#write[open]', { timeout: 5000 });
    out.operator_warning_hidden = await page.locator('#write-role').isHidden();
    await page.fill('#write-value', String(w.value));
    await page.click('#write-submit');
    await page.waitForSelector('#write-msg.ok', { timeout: 15000 });
    out.operator_msg = await textOf(page, '#write-msg');
    step('operator write confirmed: ' + out.operator_msg);
    // the dialog closes by itself; the value read back from the device shows in the table
    const wcell = `#tags tbody tr[data-tag="${w.tag}"] td.v`;
    await page.waitForFunction(([sel, v]) => {
      const e = document.querySelector(sel);
      return e && e.textContent.trim() === v;
    }, [wcell, String(w.value)], { timeout: 15000 });
    step(`table shows ${w.tag} = ${w.value}`);
    await page.waitForFunction(() => !document.getElementById('write').open, null, { timeout: 5000 });
    // an active alarm: listed, counted in the header, acknowledged by the operator
    const al = cfg.alarm;
    const arow = `#alarms tbody tr[data-device="${al.device}"][data-alarm="${al.alarm}"]`;
    await page.waitForSelector(`${arow} button.ack`, { timeout: 15000 });
    out.alarm_before = await textOf(page, `${arow} td.state`);
    out.alarm_count = await textOf(page, '#alarm-count');
    await page.click(`${arow} button.ack`);
    await page.waitForFunction((sel) => {
      const r = document.querySelector(sel);
      return r && !r.querySelector('button.ack');
    }, arow, { timeout: 15000 });
    out.alarm_after = await textOf(page, `${arow} td.state`);
    out.alarm_count_after_hidden = await page.locator('#alarm-count').isHidden();
    step(`alarm ${al.alarm} acknowledged: ${out.alarm_before} -> ${out.alarm_after}`);
    const shot1 = path.join(cfg.shots, 'ui-operator.png');
    await page.screenshot({ path: shot1, fullPage: true });
    out.shots.push(shot1);

    // the same as a viewer: refused by the gateway
    await signIn(page, cfg.viewer);
    await page.waitForSelector('#who:text("viewer")', { timeout: 10000 });
    step('switched to viewer');
    await selectDevice(page, w.device);
    await page.click(`#tags tbody tr[data-tag="${w.tag}"] button.write`);
    await page.waitForSelector('#write[open]', { timeout: 5000 });
    out.viewer_warning = await textOf(page, '#write-role');
    await page.fill('#write-value', String(w.refused_value));
    await page.click('#write-submit');
    await page.waitForSelector('#write-msg.err', { timeout: 15000 });
    out.viewer_msg = await textOf(page, '#write-msg');
    step('viewer write refused: ' + out.viewer_msg);
    const shot2 = path.join(cfg.shots, 'ui-viewer-refused.png');
    await page.screenshot({ path: shot2, fullPage: true });
    out.shots.push(shot2);
    await page.click('#write-cancel');
    out.final_value = await textOf(page, wcell);
    await ctx.close();
  } catch (e) {
    out.error = String(e && e.stack || e);
    rc = 1;
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(rc);
})();
