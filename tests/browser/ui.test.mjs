// The node's /ui page in headless Chromium, against a running node.
//
//   node ui.test.mjs --url http://127.0.0.1:PORT --token ADMIN_TOKEN [--screenshot out.png]
//
// `cargo test -p realmhost --test e2e browser_ui::` starts a node, populates it and
// runs this script; run it by hand against any node whose ledger type has a
// second, inactive version loaded. Chromium is Debian's (/usr/bin/chromium,
// or $CHROMIUM), driven by playwright-core: no browser download.
//
// What it checks: the page loads without script or CSP errors and shows one
// cell per shard, rates, plugins, the busiest realms and the message
// counters; a quarantine made through the API shows on its cell within a
// few seconds; releasing it from the page is refused without a token and
// with a wrong one, and works with the admin token; with the token the dead
// letter is listed and dropping it from the page deletes it; a swap and a
// rollback from the page change the active version.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []),
);
const URL_BASE = args.url;
const TOKEN = args.token;
if (!URL_BASE || !TOKEN) {
  console.error('usage: node ui.test.mjs --url URL --token ADMIN_TOKEN [--screenshot FILE]');
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Without the background-networking flags Chromium stalls on a closed network.
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
/** How long the page may take to show a change made through the API. */
const REFLECT_MS = 5000;

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

async function api(method, path, body, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(URL_BASE + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}

async function shardQuarantined(n) {
  const r = await api('GET', `/v1/shards/${n}`);
  return r.body.analysis.shard.quarantined;
}

async function activeLedger() {
  const r = await api('GET', '/v1/plugins');
  return r.body.plugins.find((p) => p.info.realm_type === 'ledger' && p.active).info.version;
}

async function eventually(what, probe, ms = REFLECT_MS) {
  const start = Date.now();
  for (;;) {
    if (await probe()) {
      console.log(`ok - ${what} (${Date.now() - start} ms)`);
      return;
    }
    if (Date.now() - start > ms) throw new Error(`check failed: ${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main() {
  const stats = (await api('GET', '/v1/stats')).body;
  const shards = stats.sharding.num_shards;
  const userData = mkdtempSync(join(tmpdir(), 'realmhost-ui-'));
  const ctx = await chromium.launchPersistentContext(userData, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1400, height: 1000 },
  });
  const problems = [];
  try {
    const page = ctx.pages()[0] || (await ctx.newPage());
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      // The wrong-token step makes the browser log its expected 401.
      if (m.type() === 'error' && !m.text().includes('status of 401')) {
        problems.push(`console error: ${m.text()}`);
      }
    });

    // Loads and shows every shard.
    const resp = await page.goto(`${URL_BASE}/ui`);
    check(resp.status() === 200, 'GET /ui answers 200');
    check((resp.headers()['content-security-policy'] || '').includes("script-src 'self'"),
      'the page is sent with a Content-Security-Policy');
    await page.waitForFunction((n) => document.querySelectorAll('#heatmap .cell').length === n,
      shards, { timeout: 10000 });
    check(await page.locator('#heatmap .cell').count() === shards, `one cell per shard (${shards})`);
    await page.waitForFunction(() => document.querySelectorAll('#top tbody td.realm').length > 0,
      null, { timeout: 10000 });
    check(true, 'the busiest realms are listed');
    check(await page.locator('#plugins tbody tr[data-type="ledger"]').count() === 1, 'the ledger plugin is listed');
    await page.waitForFunction(() => !document.querySelector('#rates .rate b').textContent.includes('…'),
      null, { timeout: 10000 });
    check(true, 'rates are shown');
    await eventually('the messages panel counts the dead letter',
      async () => (await page.locator('#messaging [data-figure="dead-lettered"] dd').textContent()) === '1',
      10000);
    check((await page.locator('#messaging [data-figure="sent"] dd').textContent()) === '2',
      'the messages panel counts the messages sent (a credit and a timer)');
    check((await page.locator('#dead-state').textContent()).includes('token'),
      'without a token, the dead letters are not listed');

    // A quarantine made through the API shows on the page.
    const n = Math.min(3, shards - 1);
    const cell = page.locator(`#heatmap .cell[data-shard="${n}"]`);
    check(!(await cell.evaluate((e) => e.classList.contains('quarantined'))), `shard ${n} starts unmarked`);
    const q = await api('POST', `/v1/admin/shards/${n}/quarantine`, undefined, TOKEN);
    check(q.status === 200, `quarantine shard ${n} through the API`);
    await eventually(`the page marks shard ${n} quarantined`,
      () => cell.evaluate((e) => e.classList.contains('quarantined')));

    // Without a token the page refuses the action.
    await cell.click();
    await page.locator('#shard-detail:not([hidden])').waitFor();
    await page.locator('#shard-release').click();
    await page.locator('#notice.error', { hasText: 'needs the admin token' }).waitFor({ timeout: 5000 });
    check(true, 'release without a token is refused in the page');
    check(await shardQuarantined(n), 'the shard is still quarantined (API)');

    // A wrong token: the node answers 401 and the page says so.
    await page.fill('#token', 'not-the-token');
    await page.click('#token-save');
    await page.locator('#shard-release').click();
    await page.locator('#notice.error', { hasText: '401' }).waitFor({ timeout: 5000 });
    check(true, 'release with a wrong token is refused (401 shown)');
    check(await shardQuarantined(n), 'the shard is still quarantined (API)');

    // The admin token: the release goes through.
    await page.fill('#token', TOKEN);
    await page.click('#token-save');
    check((await page.locator('#token-state').textContent()).includes('actions enabled'), 'the token is taken');
    await page.locator('#shard-release').click();
    await eventually('release from the page lifts the quarantine (API)', async () => !(await shardQuarantined(n)));
    await eventually(`the page unmarks shard ${n}`,
      () => cell.evaluate((e) => !e.classList.contains('quarantined')));

    // With the token the dead letter is listed; dropping it from the page
    // deletes it.
    const dead = page.locator('#dead tbody tr[data-id]');
    await dead.first().waitFor({ timeout: 10000 });
    check(await dead.count() === 1, 'the dead letter is listed');
    const deadId = await dead.first().getAttribute('data-id');
    check(deadId.startsWith('bank/eu-1@'), `the dead letter is bank/eu-1's credit (${deadId})`);
    await dead.first().locator('button.drop').click();
    await eventually('drop from the page deletes the dead letter (API)', async () =>
      (await api('GET', '/v1/admin/messages/dead', undefined, TOKEN)).body.dead_letters.length === 0);
    await page.locator('#dead tbody tr[data-id]').first().waitFor({ state: 'detached', timeout: REFLECT_MS });
    check(true, 'the page no longer lists it');

    // Swap the ledger to its other version, then roll back, from the page.
    const before = await activeLedger();
    const row = page.locator('#plugins tbody tr[data-type="ledger"]');
    const other = await row.locator('select option').first().getAttribute('value');
    check(other && other !== before, 'the ledger row offers another version');
    await row.locator('select').selectOption(other);
    await row.locator('button.swap').click();
    await eventually('swap from the page activates the other version (API)',
      async () => (await activeLedger()) === other, 30000);
    await page.locator('#plugins tbody tr[data-type="ledger"] button.rollback:not([disabled])')
      .waitFor({ timeout: REFLECT_MS });
    await page.locator('#plugins tbody tr[data-type="ledger"] button.rollback').click();
    await eventually('rollback from the page restores the first version (API)',
      async () => (await activeLedger()) === before, 30000);
    await page.locator('#plugins tbody tr[data-type="ledger"]', { hasText: 'rolled back' })
      .waitFor({ timeout: REFLECT_MS });
    check(true, 'the page shows the rollback');

    if (args.screenshot) {
      // A quarantined shard on the picture, the way an operator would see one.
      await api('POST', `/v1/admin/shards/${n}/quarantine`, undefined, TOKEN);
      await page.waitForTimeout(2500);
      await page.screenshot({ path: args.screenshot, fullPage: true });
      console.log(`screenshot: ${args.screenshot}`);
    }
    check(problems.length === 0, `no script errors or CSP violations${problems.length ? ': ' + problems.join('; ') : ''}`);
  } finally {
    await ctx.close();
    rmSync(userData, { recursive: true, force: true });
  }
}

main().then(
  () => console.log('browser test passed'),
  (e) => {
    console.error(e.stack || String(e));
    process.exit(1);
  },
);
