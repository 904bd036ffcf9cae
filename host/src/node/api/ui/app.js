// realmhost operator page: polls /v1/ui/snapshot, draws it, and calls the
// admin routes with the token kept in this tab's sessionStorage.
// Everything from the node is written with textContent, never as HTML.
'use strict';

const POLL_MS = 1000;
const TOKEN_KEY = 'realmhost.adminToken';
const SPARK_POINTS = 120;

const ui = {
  snap: null,        // latest snapshot
  prev: null,        // the snapshot rates were computed against
  rates: null,       // node-wide rates
  shardRates: [],    // events/s per shard
  spark: [],         // appends/s history
  colorBy: 'activity',
  selected: null,    // selected shard
  cells: [],
  analysis: null,    // { shard, quarantine, at } of the verdict shown
  picks: {},         // realm type -> { version, force }: survives the redraws
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function fmt(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + 'M';
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + 'k';
  return n.toFixed(digits);
}

function ago(ms) {
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

// ---------------------------------------------------------------- token

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

function showTokenState() {
  const set = token() !== '';
  $('token-form').classList.toggle('set', set);
  $('token-state').textContent = ui.snap && !ui.snap.node.admin_enabled
    ? 'read-only: this node has no admin token configured'
    : set ? 'token set: actions enabled' : 'read-only';
}

function notice(kind, text) {
  const n = $('notice');
  n.hidden = false;
  n.className = `notice ${kind}`;
  n.textContent = text;
}

// Call an admin route. Without a token the page refuses at once: the node
// would answer 401 anyway, and the operator learns what to do.
async function act(label, method, path, body) {
  const t = token();
  if (!t) {
    notice('error', `${label}: refused — this action needs the admin token (enter it above).`);
    return null;
  }
  notice('ok', `${label}: sent…`);
  try {
    const r = await fetch(path, {
      method,
      headers: { 'Authorization': `Bearer ${t}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const j = await r.json().catch(() => ({}));
    if (!r.ok) {
      const e = j.error || {};
      notice('error', `${label}: refused (${r.status} ${e.code || ''}) — ${e.message || r.statusText}`);
      return null;
    }
    notice('ok', `${label}: done.`);
    refresh();
    return j;
  } catch (err) {
    notice('error', `${label}: the node did not answer (${err.message}).`);
    return null;
  }
}

// ---------------------------------------------------------------- polling

let timer = null;

async function refresh() {
  clearTimeout(timer);
  try {
    const r = await fetch('/v1/ui/snapshot', { cache: 'no-store' });
    if (!r.ok) {
      const j = await r.json().catch(() => ({}));
      throw new Error((j.error && j.error.message) || `HTTP ${r.status}`);
    }
    update(await r.json());
    $('conn').textContent = 'live';
    $('conn').classList.remove('down');
  } catch (err) {
    $('conn').textContent = `no answer (${err.message}); retrying`;
    $('conn').classList.add('down');
  } finally {
    timer = setTimeout(refresh, POLL_MS);
  }
}

function update(s) {
  const prev = ui.prev;
  ui.snap = s;
  if (!prev || s.taken_at_ms < prev.taken_at_ms || s.node.num_shards !== prev.node.num_shards) {
    ui.prev = s; // restart: no rates yet
  } else if (s.taken_at_ms > prev.taken_at_ms) {
    const dt = (s.taken_at_ms - prev.taken_at_ms) / 1000;
    const d = (k) => Math.max(0, s.counters[k] - prev.counters[k]) / dt;
    ui.rates = {
      appends: d('appends'), rejections: d('rejections'), failures: d('failures'),
      faults: d('plugin_faults'), failed_commits: d('failed_commits'),
      loads: d('loads'), evictions: d('evictions'), calls: d('plugin_calls'),
      sent: d('messages_sent'), settled: d('messages_settled'),
    };
    ui.shardRates = s.shards.activity.map((a, i) => Math.max(0, a - prev.shards.activity[i]) / dt);
    ui.spark.push(ui.rates.appends);
    if (ui.spark.length > SPARK_POINTS) ui.spark.shift();
    ui.prev = s;
  }
  if (!prev) showTokenState();
  drawSummary(s);
  drawRates();
  drawHeatmap(s);
  drawDetail(s);
  drawPlugins(s);
  drawTop(s);
  drawMessaging(s);
}

// ---------------------------------------------------------------- summary and rates

function drawSummary(s) {
  const n = s.node;
  const chip = (text, cls) => el('span', { class: `chip ${cls || ''}`, text });
  $('summary').replaceChildren(
    chip(`health ${fmt(n.health_score)}`, n.health_score < 80 ? 'warn' : ''),
    chip(`${n.num_shards} shards`),
    chip(`${fmt(n.loaded_realms)} realms in memory`),
    chip(`${n.quarantined_shards} quarantined`, n.quarantined_shards ? 'bad' : ''),
    chip(`${n.parked_realms} parked`, n.parked_realms ? 'warn' : ''),
    chip(`${n.unservable_realms} unservable`, n.unservable_realms ? 'warn' : ''),
    chip(n.storage_writable ? 'storage ok' : `storage failing: ${n.storage_error || ''}`,
      n.storage_writable ? '' : 'bad'),
    chip(`pool ${n.exec_busy}/${n.exec_threads} busy, ${n.exec_queued} queued`, n.exec_queued ? 'warn' : ''),
  );
  $('shard-count').textContent = `(${n.num_shards}, entropy median ${fmt(n.global_entropy, 2)})`;
}

function drawRates() {
  const r = ui.rates;
  const item = (label, v, bad) => el('div', { class: `rate ${bad && v > 0 ? 'bad' : ''}` },
    el('b', { text: r ? fmt(v, v < 10 ? 1 : 0) : '…' }), el('span', { text: label }));
  const v = r || {};
  $('rates').replaceChildren(
    item('appends committed', v.appends),
    item('rejections', v.rejections),
    item('append failures', v.failures, true),
    item('plugin faults', v.faults, true),
    item('failed commits', v.failed_commits, true),
    item('plugin calls', v.calls),
    item('loads', v.loads),
    item('evictions', v.evictions),
    item('messages sent', v.sent),
    item('messages settled', v.settled),
  );
  drawSpark();
}

function drawSpark() {
  const c = $('spark');
  const w = c.clientWidth || 600;
  if (c.width !== w) c.width = w;
  const g = c.getContext('2d');
  g.clearRect(0, 0, c.width, c.height);
  const pts = ui.spark;
  if (pts.length < 2) return;
  const max = Math.max(1, ...pts);
  const step = c.width / (SPARK_POINTS - 1);
  const x0 = c.width - (pts.length - 1) * step;
  g.beginPath();
  pts.forEach((p, i) => {
    const x = x0 + i * step;
    const y = c.height - 4 - (p / max) * (c.height - 14);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.strokeStyle = '#5aa9ff';
  g.lineWidth = 1.5;
  g.stroke();
  g.fillStyle = '#8d99a8';
  g.font = '11px sans-serif';
  g.fillText(`appends/s, peak ${fmt(max)} over the last ${pts.length} s`, 4, 11);
}

// ---------------------------------------------------------------- heat map

const METRICS = {
  activity: { label: 'events/s', value: (s, i) => ui.shardRates[i] || 0 },
  loaded: { label: 'loaded realms', value: (s, i) => s.shards.loaded[i] },
  hitrate: {
    label: 'hit rate',
    value: (s, i) => {
      const h = s.shards.hits[i], m = s.shards.misses[i];
      return h + m === 0 ? null : h / (h + m);
    },
    fixedMax: 1, invert: true,
  },
  entropy: { label: 'entropy', value: (s, i) => s.shards.entropy[i], fixedMax: 1, invert: true },
  reputation: { label: 'reputation', value: (s, i) => s.shards.reputation[i], fixedMax: 1, invert: true },
};

function heat(t) {
  // t in [0, 1]: dark blue → teal → yellow → orange-red.
  const hue = 220 - 205 * t;
  const light = 22 + 33 * t;
  return `hsl(${hue.toFixed(0)}, ${(45 + 45 * t).toFixed(0)}%, ${light.toFixed(0)}%)`;
}

function buildCells(n) {
  const grid = $('heatmap');
  ui.cells = [];
  const cells = [];
  for (let i = 0; i < n; i++) {
    const c = el('button', { class: 'cell', type: 'button', 'data-shard': String(i), role: 'gridcell' });
    c.addEventListener('click', () => select(i));
    c.append(el('span', { class: 'idx', text: String(i) }), el('span', { class: 'marks' }));
    cells.push(c);
  }
  grid.replaceChildren(...cells);
  ui.cells = cells;
}

function drawHeatmap(s) {
  const n = s.node.num_shards;
  if (ui.cells.length !== n) buildCells(n);
  const m = METRICS[ui.colorBy];
  const values = [];
  for (let i = 0; i < n; i++) values.push(m.value(s, i));
  const max = m.fixedMax || Math.max(1e-9, ...values.filter((v) => v !== null));
  for (let i = 0; i < n; i++) {
    const c = ui.cells[i];
    const v = values[i];
    let t = v === null || v === undefined ? null : Math.min(1, v / max);
    if (t !== null && m.invert) t = 1 - t;
    c.style.backgroundColor = t === null ? '#232a35' : heat(t);
    const q = s.shards.quarantine[i];
    const parked = s.shards.parked[i];
    const alarm = s.shards.alarm[i];
    c.classList.toggle('quarantined', q !== null);
    c.classList.toggle('parked', parked > 0);
    c.classList.toggle('alarm', alarm);
    c.classList.toggle('selected', ui.selected === i);
    const marks = [];
    if (q !== null) marks.push(el('span', { class: 'mark-q', text: 'Q' }));
    if (parked > 0) marks.push(el('span', { class: 'mark-p', text: 'P' }));
    if (alarm) marks.push(el('span', { class: 'mark-a', text: '!' }));
    c.lastChild.replaceChildren(...marks);
    c.title = `shard ${i}: ${m.label} ${v === null ? 'n/a' : fmt(v, v < 10 ? 2 : 0)}` +
      `, ${s.shards.loaded[i]} realms loaded, reputation ${s.shards.reputation[i]}` +
      (q ? `, quarantined (${q})` : '') + (parked ? `, ${parked} parked` : '');
  }
}

// ---------------------------------------------------------------- shard detail

function select(i) {
  ui.selected = i;
  ui.analysis = null;
  $('shard-detail').hidden = false;
  if (ui.snap) { drawHeatmap(ui.snap); drawDetail(ui.snap); }
  loadAnalysis(i);
}

// The monitor's verdict on one shard, fetched again when its quarantine
// changes or every few seconds while it is shown.
async function loadAnalysis(i) {
  ui.analysis = { shard: i, quarantine: ui.snap ? ui.snap.shards.quarantine[i] : null, at: Date.now() };
  try {
    const r = await fetch(`/v1/shards/${i}`, { cache: 'no-store' });
    const j = await r.json();
    if (ui.selected !== i) return;
    $('shard-analysis').textContent = r.ok
      ? `Monitor: ${j.analysis.recommendation}`
      : (j.error && j.error.message) || `HTTP ${r.status}`;
  } catch (err) {
    $('shard-analysis').textContent = `analysis unavailable (${err.message})`;
  }
}

function drawDetail(s) {
  const i = ui.selected;
  if (i === null || i >= s.node.num_shards) return;
  const sh = s.shards;
  const hm = sh.hits[i] + sh.misses[i];
  const q = sh.quarantine[i];
  $('shard-title').textContent = `Shard ${i}` + (q ? ` — quarantined (${q})` : '');
  const rows = [
    ['loaded realms', fmt(sh.loaded[i])],
    ['events/s', fmt(ui.shardRates[i] || 0, 1)],
    ['events recorded', fmt(sh.activity[i])],
    ['cache hit rate', hm ? `${(100 * sh.hits[i] / hm).toFixed(1)} %` : '–'],
    ['entropy', sh.entropy[i] === null ? 'not judged yet' : sh.entropy[i].toFixed(3)],
    ['reputation', sh.reputation[i].toFixed(3)],
    ['entropy alarm', sh.alarm[i] ? 'yes' : 'no'],
    ['parked realms', String(sh.parked[i])],
  ];
  $('shard-figures').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
  const a = ui.analysis;
  if (a && a.shard === i && (a.quarantine !== q || Date.now() - a.at > 5000)) loadAnalysis(i);
  $('shard-quarantine').disabled = q !== null;
  $('shard-release').disabled = q === null;
}

async function shardAction(what) {
  const i = ui.selected;
  if (i === null) return;
  const done = await act(`${what === 'quarantine' ? 'Quarantine' : 'Release'} shard ${i}`,
    'POST', `/v1/admin/shards/${i}/${what}`);
  if (done) loadAnalysis(i);
}

// ---------------------------------------------------------------- plugins

function short(v) { return v.version.slice(0, 12); }

function versionName(v) { return `${v.semver} (${short(v)})`; }

function drawPlugins(s) {
  const body = $('plugins').tBodies[0];
  const focused = document.activeElement;
  // Do not rebuild while the operator has a version list open.
  if (focused && body.contains(focused) && focused.tagName === 'SELECT') return;
  const rows = s.plugins.map((t) => {
    const active = t.versions.find((v) => v.active);
    const previous = t.versions.find((v) => v.previous);
    const status = [];
    if (t.changing) status.push(el('div', { class: 'status-run', text: 'swap under way' }));
    if (t.shadow) {
      const sh = t.shadow;
      const cls = sh.state === 'running' ? 'status-run'
        : sh.passed === false || sh.state === 'failed' ? 'status-bad' : 'status-ok';
      const res = sh.state === 'running' ? `running ${sh.realms_done}/${sh.realms_total}`
        : sh.passed === true ? 'passed' : sh.passed === false ? 'failed' : sh.state;
      status.push(el('div', { class: cls, text: `shadow ${sh.target}: ${res}` }));
    }
    const lc = t.last_change;
    if (lc) {
      status.push(el('div', {
        class: 'muted',
        text: `${lc.action.replace('_', ' ')}: ${lc.semver} (${lc.version.slice(0, 12)}) ${ago(lc.at_ms)}` +
          (lc.forced ? ' (forced)' : ''),
      }));
    }
    for (const v of t.versions.filter((x) => x.quarantined)) {
      status.push(el('div', { class: 'status-bad', text: `${versionName(v)} quarantined: ${v.quarantined}` }));
    }
    const others = t.versions.filter((v) => !v.active);
    const kept = ui.picks[t.realm_type] || (ui.picks[t.realm_type] = { version: null, force: false });
    const pick = el('select', { 'aria-label': `version of ${t.realm_type} to swap to`, 'data-type': t.realm_type });
    for (const v of others) pick.append(el('option', { value: v.version, text: versionName(v) }));
    if (others.some((v) => v.version === kept.version)) pick.value = kept.version;
    pick.addEventListener('change', () => { kept.version = pick.value; });
    const force = el('input', { type: 'checkbox', class: 'force', 'aria-label': 'skip the shadow replay' });
    force.checked = kept.force;
    force.addEventListener('change', () => { kept.force = force.checked; });
    const swap = el('button', { type: 'button', class: 'swap', text: 'Swap' });
    swap.disabled = others.length === 0;
    swap.addEventListener('click', () => act(`Swap ${t.realm_type} to ${pick.selectedOptions[0]?.textContent}`,
      'POST', `/v1/admin/plugins/${encodeURIComponent(t.realm_type)}/swap`,
      { version: pick.value, force: force.checked }));
    const rollback = el('button', { type: 'button', class: 'rollback', text: 'Roll back' });
    rollback.disabled = !previous;
    rollback.addEventListener('click', () => act(`Roll back ${t.realm_type}`,
      'POST', `/v1/admin/plugins/${encodeURIComponent(t.realm_type)}/rollback`, { force: force.checked }));
    const actions = el('div', { class: 'actions' });
    if (others.length) actions.append(pick);
    actions.append(swap, rollback, el('label', {}, force, ' force'));
    const versions = el('td', {});
    for (const v of t.versions) {
      const role = v.active ? 'active' : v.previous ? 'rollback target' : 'loaded';
      versions.append(el('div', { class: v.active ? 'v-active' : 'muted' },
        el('b', { text: `${versionName(v)} ` }),
        `${role} · ${fmt(v.calls)} calls, ${fmt(v.faults)} faults`));
    }
    if (!active) versions.prepend(el('div', { class: 'status-bad', text: 'no active version' }));
    return el('tr', { 'data-type': t.realm_type },
      el('td', {}, el('b', { text: t.realm_type })),
      versions,
      el('td', {}, ...status),
      el('td', {}, actions));
  });
  if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: '4', class: 'muted', text: 'no plugins loaded' })));
  body.replaceChildren(...rows);
}

// ---------------------------------------------------------------- top realms and messaging

function drawTop(s) {
  const rows = s.top_realms.map((r) => el('tr', {},
    el('td', { class: 'realm', text: r.realm_id }),
    el('td', { class: 'num', text: String(r.shard) }),
    el('td', { class: 'num', text: (r.error ? '≤ ' : '') + fmt(r.appends) })));
  if (rows.length === 0) {
    rows.push(el('tr', {}, el('td', { colspan: '3', class: 'muted', text: 'no appends through the API recently' })));
  }
  $('top').tBodies[0].replaceChildren(...rows);
}

function drawMessaging(s) {
  const m = s.messaging;
  if (!m.available) {
    $('messaging').replaceChildren(el('div', { class: 'muted', text: 'messaging is not available in this node' }));
    return;
  }
  const settled = m.accepted + m.rejected + m.invalid + m.expired + m.dead_lettered;
  const fig = (label, v, cls) => el('div', { class: cls || '', 'data-figure': label },
    el('dt', { text: label }), el('dd', { text: v }));
  const warn = (n) => (n ? 'warn' : '');
  $('messaging').replaceChildren(
    fig('pending', fmt(m.pending)),
    fig('in flight', fmt(m.in_flight)),
    fig('sent', fmt(m.sent)),
    fig('accepted', fmt(m.accepted)),
    fig('rejected', fmt(m.rejected)),
    fig('invalid', fmt(m.invalid), warn(m.invalid)),
    fig('expired', fmt(m.expired), warn(m.expired)),
    fig('dead-lettered', fmt(m.dead_lettered), m.dead_lettered ? 'bad' : ''),
    fig('replies', fmt(m.replies)),
    fig('retries', fmt(m.retries), warn(m.retries)),
    fig('redelivered', fmt(m.redelivered)),
    fig('latency mean', settled ? `${fmt(m.latency_ms_sum / settled)} ms` : '–'),
    fig('latency max', `${fmt(m.latency_ms_max)} ms`),
  );
  maybeLoadDead(m);
}

// The dead letters are a storage read behind the read scope: the page asks
// for the first few with the token, when their count changes or every few
// seconds, never without a token.
const DEAD_SHOWN = 10;
const DEAD_EVERY_MS = 5000;
ui.dead = { key: null, at: 0, loading: false };

function deadKey(m) { return `${token()}|${m.dead_lettered}`; }

function maybeLoadDead(m) {
  const d = ui.dead;
  if (d.loading) return;
  if (!token()) {
    if (d.key !== null || !$('dead-state').textContent) {
      d.key = null;
      $('dead-state').textContent = '(enter the admin or read token above to list them)';
      $('dead').tBodies[0].replaceChildren();
    }
    return;
  }
  const key = deadKey(m);
  if (d.key === key && Date.now() - d.at < DEAD_EVERY_MS) return;
  loadDead(key);
}

async function loadDead(key) {
  const d = ui.dead;
  d.loading = true;
  try {
    const r = await fetch(`/v1/admin/messages/dead?limit=${DEAD_SHOWN}`,
      { cache: 'no-store', headers: { 'Authorization': `Bearer ${token()}` } });
    const j = await r.json().catch(() => ({}));
    if (!r.ok) {
      const e = j.error || {};
      $('dead-state').textContent = `(not listed: ${r.status} ${e.code || ''})`;
      $('dead').tBodies[0].replaceChildren();
    } else {
      drawDead(j);
    }
  } catch (err) {
    $('dead-state').textContent = `(not listed: ${err.message})`;
  } finally {
    d.loading = false;
    d.key = key;
    d.at = Date.now();
  }
}

function drawDead(j) {
  const list = j.dead_letters || [];
  $('dead-state').textContent = list.length === 0 ? '(none)'
    : j.next ? `(the first ${list.length}; the rest: realmhost messages dead)` : `(${list.length})`;
  const rows = list.map((m) => {
    const retry = el('button', { type: 'button', class: 'retry', text: 'Retry' });
    retry.addEventListener('click', () => deadAction('retry', m.message_id));
    const drop = el('button', { type: 'button', class: 'drop', text: 'Drop' });
    drop.addEventListener('click', () => deadAction('drop', m.message_id));
    return el('tr', { 'data-id': m.message_id },
      el('td', { class: 'realm', text: m.message_id }),
      el('td', { class: 'realm', text: `${m.target} (${m.target_type}) ${m.kind}` }),
      el('td', { text: m.dead_reason || '' }),
      el('td', {}, el('div', { class: 'actions' }, retry, drop)));
  });
  $('dead').tBodies[0].replaceChildren(...rows);
}

async function deadAction(what, id) {
  const done = await act(`${what === 'retry' ? 'Retry' : 'Drop'} dead letter ${id}`,
    'POST', `/v1/admin/messages/dead/${what}`, { id });
  if (done && !ui.dead.loading && ui.snap) loadDead(deadKey(ui.snap.messaging));
}

// ---------------------------------------------------------------- start

function start() {
  $('token').value = token();
  showTokenState();
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const v = $('token').value.trim();
    if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
  });
  $('token-forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $('token').value = '';
    showTokenState();
  });
  $('color-by').addEventListener('change', (e) => {
    ui.colorBy = e.target.value;
    if (ui.snap) drawHeatmap(ui.snap);
  });
  $('shard-quarantine').addEventListener('click', () => shardAction('quarantine'));
  $('shard-release').addEventListener('click', () => shardAction('release'));
  $('shard-close').addEventListener('click', () => {
    ui.selected = null;
    $('shard-detail').hidden = true;
    if (ui.snap) drawHeatmap(ui.snap);
  });
  refresh();
}

document.addEventListener('DOMContentLoaded', start);
