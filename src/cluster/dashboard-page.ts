// The dashboard's one page (src/cluster/dashboard.ts serves it): HTML, CSS and a script of its own,
// no library and nothing from elsewhere. It listens to /events (server-sent events, one `state`
// object per look at the cluster) and draws: a card per host with its load over time (an SVG
// line; 1.0 is a full host), its jobs, and drain/undrain buttons; migrations under way and past;
// the balancer's lines. Every value is put in the page as text (textContent), never as markup.
export const DASHBOARD_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ferry cluster</title>
<style>
  :root { --bg: #f6f7f9; --card: #fff; --ink: #1d2330; --dim: #687385; --line: #dfe3ea; --ok: #1f8a4c;
          --warn: #b7791f; --bad: #c53030; --accent: #2f5fd0; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: var(--bg); color: var(--ink); }
  header { display: flex; align-items: baseline; gap: 16px; padding: 14px 24px; background: var(--ink); color: #fff; }
  header h1 { font-size: 18px; margin: 0; }
  header .meta { color: #c5cbd6; }
  #live { margin-left: auto; font-size: 12px; }
  #live.on::before { content: '●'; color: #48d17e; margin-right: 4px; }
  #live.off::before { content: '●'; color: #e05a5a; margin-right: 4px; }
  main { padding: 16px 24px; display: grid; gap: 16px; grid-template-columns: minmax(0, 1fr); }
  #hosts { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 16px; }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; overflow-x: auto; }
  td.reason { max-width: 480px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  td.when, td.route { white-space: nowrap; }
  .card h2 { font-size: 15px; margin: 0 0 2px; display: flex; gap: 8px; align-items: center; }
  .badge { font-size: 11px; padding: 1px 6px; border-radius: 9px; background: var(--line); color: var(--ink); }
  .badge.drained { background: #fde7c2; color: #7a4b00; }
  .badge.busy { background: #dbe6ff; color: #1f3f8f; }
  .badge.down { background: #fcd4d4; color: #8a1c1c; }
  .stats { color: var(--dim); font-size: 12px; margin-bottom: 6px; }
  .stats b { color: var(--ink); font-weight: 600; }
  svg.chart { width: 100%; height: 90px; background: #fafbfc; border: 1px solid var(--line); border-radius: 4px; }
  svg.chart polyline { fill: none; stroke: var(--accent); stroke-width: 2; }
  svg.chart line.full { stroke: var(--bad); stroke-dasharray: 4 3; stroke-width: 1; }
  svg.chart text { font-size: 10px; fill: var(--dim); }
  table { width: 100%; border-collapse: collapse; font-size: 12px; }
  th { text-align: left; color: var(--dim); font-weight: 500; border-bottom: 1px solid var(--line); padding: 3px 4px; }
  td { border-bottom: 1px solid #f0f2f5; padding: 3px 4px; font-variant-numeric: tabular-nums; }
  .actions { display: flex; gap: 8px; margin-top: 8px; align-items: center; }
  button { font: inherit; font-size: 12px; padding: 3px 10px; border-radius: 5px; border: 1px solid var(--line);
           background: #fff; cursor: pointer; }
  button:hover { border-color: var(--accent); }
  button:disabled { opacity: .5; cursor: default; }
  .note { font-size: 12px; color: var(--dim); }
  .moved { color: var(--ok); } .moving { color: var(--accent); } .failed, .in-doubt { color: var(--bad); }
  .refused, .exited { color: var(--warn); }
  #log { font: 12px/1.5 ui-monospace, monospace; max-height: 180px; overflow: auto; white-space: pre; color: var(--dim); }
  .empty { color: var(--dim); font-style: italic; }
</style>
</head>
<body>
<header><h1>ferry cluster</h1><span class="meta" id="who"></span><span id="live" class="off">connecting</span></header>
<main>
  <section id="hosts"></section>
  <section class="card"><h2>Migrations</h2>
    <table id="migrations"><thead><tr><th>started</th><th>job</th><th>from → to</th><th>reason</th><th>outcome</th>
      <th>downtime</th><th>total</th><th>bytes</th></tr></thead><tbody></tbody></table></section>
  <section class="card"><h2>Balancer</h2><div id="log"></div></section>
</main>
<script>
'use strict';
const $ = (s, root = document) => root.querySelector(s);
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
const NS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}
const bytes = (n) => n === undefined ? '' : n >= 1 << 30 ? (n / (1 << 30)).toFixed(1) + ' GiB' :
  n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + ' MiB' : n >= 1024 ? (n / 1024).toFixed(0) + ' KiB' : n + ' B';
const ms = (n) => n === undefined ? '' : n >= 1000 ? (n / 1000).toFixed(2) + ' s' : Math.round(n) + ' ms';
const time = (t) => new Date(t).toLocaleTimeString([], { hour12: false });
const num = (n, d = 2) => n === undefined || n === null ? '–' : Number(n).toFixed(d);

/** Load over the last minutes: 0 at the bottom, the top at least 1.0 (a full host, dashed). */
function chart(series) {
  const W = 600, H = 90, P = 4;
  const s = svg('svg', { class: 'chart', viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'none' });
  if (series.length === 0) return s;
  const t1 = series[series.length - 1][0], t0 = Math.min(series[0][0], t1 - 20000);
  const top = Math.max(1.2, ...series.map((p) => p[1])) * 1.05;
  const x = (t) => P + ((t - t0) / Math.max(1, t1 - t0)) * (W - 2 * P);
  const y = (v) => H - P - (v / top) * (H - 2 * P);
  s.append(svg('line', { class: 'full', x1: 0, x2: W, y1: y(1), y2: y(1) }));
  s.append(svg('text', { x: W - 40, y: y(1) - 3 }, 'full'));
  s.append(svg('text', { x: 6, y: 12 }, 'load ' + top.toFixed(1)));
  s.append(svg('polyline', { points: series.map((p) => x(p[0]).toFixed(1) + ',' + y(p[1]).toFixed(1)).join(' ') }));
  return s;
}

async function act(what, host, button) {
  button.disabled = true;
  const res = await fetch('/api/' + what, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ host }) });
  if (!res.ok) alert((await res.json()).error.message);
}

function hostCard(h, drain) {
  const badges = [];
  if (!h.reachable) badges.push(el('span', { class: 'badge down' }, 'unreachable'));
  if (h.drained) badges.push(el('span', { class: 'badge drained' }, 'drained'));
  if (h.busy) badges.push(el('span', { class: 'badge busy' }, 'migrating'));
  const card = el('article', { class: 'card host', 'data-host': h.endpoint },
    el('h2', {}, h.endpoint, ...badges));
  if (!h.reachable) { card.append(el('div', { class: 'stats' }, h.error || '')); return card; }
  card.append(el('div', { class: 'stats' },
    h.hostname + ' · load ', el('b', { class: 'load' }, num(h.load)), ' · demand ' + num(h.demand) + ' of ' +
    num(h.capacity) + ' cores · CPU ' + num(h.cpuUse) + (h.pressure === null ? '' : ' · pressure ' + num(h.pressure, 1) + '%') +
    ' · free ' + bytes(h.memAvailableBytes)));
  card.append(chart(h.series));
  const rows = h.jobs.map((j) => el('tr', { class: 'job', 'data-job': j.id }, el('td', {}, j.name), el('td', {}, j.pid),
    el('td', {}, num(j.cpuRate)), el('td', {}, num(j.cpuSeconds, 1) + ' s'), el('td', {}, bytes(j.rssBytes)),
    el('td', {}, j.hops.length)));
  card.append(rows.length === 0 ? el('p', { class: 'empty jobs-none' }, 'no jobs') :
    el('table', {}, el('thead', {}, el('tr', {}, ...['job', 'pid', 'cores', 'CPU', 'RSS', 'hops'].map((t) => el('th', {}, t)))),
      el('tbody', {}, ...rows)));
  const d = drain || {};
  const actions = el('div', { class: 'actions' });
  if (h.drained) actions.append(el('button', { class: 'undrain', onclick: (e) => act('undrain', h.endpoint, e.target) }, 'Undrain'));
  else actions.append(el('button', { class: 'drain', onclick: (e) => act('drain', h.endpoint, e.target) }, 'Drain'));
  if (d.state) actions.append(el('span', { class: 'note drain-state' }, d.state + (d.moved ? ', ' + d.moved + ' moved' : '') +
    (d.left && d.left.length ? ', left: ' + d.left.join('; ') : '') + (d.error ? ': ' + d.error : '')));
  card.append(actions);
  return card;
}

function render(s) {
  $('#who').textContent = s.balancer.id + ' · ' + (s.balancer.membership === 'etcd' ? 'etcd' : 'static peers') + ' · ' +
    (s.balancer.acting ? 'leading' : 'standing by') + ' · ' + s.hosts.length + ' hosts, ' +
    s.hosts.reduce((n, h) => n + h.jobs.length, 0) + ' jobs';
  $('#hosts').replaceChildren(...s.hosts.map((h) => hostCard(h, s.drains[h.endpoint])));
  const rows = s.migrations.map((m) => el('tr', { class: 'migration ' + m.outcome },
    el('td', { class: 'when' }, time(m.at)), el('td', {}, m.name), el('td', { class: 'route' }, m.from + ' → ' + m.to),
    el('td', { class: 'reason', title: m.reason }, m.reason),
    el('td', { class: 'outcome ' + m.outcome, title: m.error || '' }, m.outcome), el('td', { class: 'downtime' }, ms(m.downtimeMs)),
    el('td', {}, ms(m.totalMs)), el('td', {}, bytes(m.bytes))));
  $('#migrations tbody').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { class: 'empty', colspan: 8 }, 'none yet'))]));
  $('#log').textContent = s.log.join('\\n');
}

const source = new EventSource('/events');
source.addEventListener('state', (e) => { render(JSON.parse(e.data)); $('#live').className = 'on'; $('#live').textContent = 'live'; });
source.onerror = () => { $('#live').className = 'off'; $('#live').textContent = 'reconnecting'; };
</script>
</body>
</html>
`;
