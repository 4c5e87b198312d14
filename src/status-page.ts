/**
 * The status page, GET / on every host (and on `dabba demo --http`): one self-contained HTML page,
 * no CDN and no build step, that polls the GET /status beside it every second and draws the chains
 * (each replica with its role, host, lag and health), the hosts, live writes/s and commit p99 as
 * small charts, and the recent reconfigurations. Any host shows the whole cluster: /status holds
 * the chain table and every live host's last report.
 *
 * The page holds no data, so it is served without a token; /status needs one when the API does,
 * and the page takes it from its address's fragment (`/#token=...`, which browsers never send).
 * Everything it writes into the page goes in as text, never as markup: host ids are user input.
 */
import { createHash } from 'node:crypto';

const SCRIPT = String.raw`
'use strict';
const SAMPLES = 120;
const history = [];
const token = new URLSearchParams(location.hash.slice(1)).get('token');
const $ = (id) => document.getElementById(id);

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes ?? {})) node.setAttribute(name, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function rate(value) {
  return value >= 1e6 ? (value / 1e6).toFixed(2) + ' M/s' : value >= 1e3 ? (value / 1e3).toFixed(1) + ' k/s' : Math.round(value) + ' /s';
}

function chart(svg, values, format) {
  const width = 300, height = 60;
  const max = Math.max(1e-9, ...values);
  const points = values.map((value, index) => ((index / Math.max(1, SAMPLES - 1)) * width).toFixed(1) + ',' + (height - 4 - (value / max) * (height - 8)).toFixed(1));
  svg.replaceChildren();
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  line.setAttribute('points', points.join(' '));
  svg.append(line);
  const label = document.createElementNS('http://www.w3.org/2000/svg', 'text');
  label.setAttribute('x', '2');
  label.setAttribute('y', '10');
  label.textContent = 'max ' + format(max === 1e-9 ? 0 : max);
  svg.append(label);
}

function render(status) {
  const hosts = status.hosts ?? [];
  const live = new Set(hosts.map((host) => host.hostId));
  // Each write is applied at every replica of its chain: what the hosts applied, over the replicas.
  const writes = hosts.reduce((sum, host) => sum + (host.writesPerSecond ?? 0), 0) / Math.max(1, status.settings?.replicas ?? 1);
  const p99 = Math.max(status.commitP99Ms ?? 0, ...hosts.map((host) => host.commitP99Ms ?? 0));
  history.push({ writes, p99 });
  if (history.length > SAMPLES) history.shift();

  $('where').textContent = status.hostId === undefined ? '' : 'served by ' + status.hostId + (status.isMaster ? ' (master)' : '');
  $('writes-now').textContent = rate(writes);
  $('p99-now').textContent = p99.toFixed(2) + ' ms';
  chart($('chart-writes'), history.map((sample) => sample.writes), rate);
  chart($('chart-p99'), history.map((sample) => sample.p99), (value) => value.toFixed(2) + ' ms');

  $('chains').replaceChildren(...(status.chains ?? []).map((chain) => {
    const members = chain.members.map((member) => {
      const health = member.hostId === null || !live.has(member.hostId) ? 'down' : member.lag !== null && member.lag > 0 ? 'behind' : 'ok';
      return element('li', { class: 'replica', 'data-role': member.role, 'data-host': member.hostId ?? '', 'data-health': health },
        element('span', { class: 'role' }, member.role),
        element('span', { class: 'host' }, member.hostId ?? '?'),
        element('span', { class: 'lag' }, member.lag === null ? 'lag ?' : 'lag ' + member.lag));
    });
    return element('div', { class: 'chain', 'data-chain': chain.chain, 'data-epoch': chain.epoch },
      element('span', { class: 'label' }, 'chain ' + chain.chain + ' · epoch ' + chain.epoch),
      element('ol', {}, ...members));
  }));

  $('hosts').replaceChildren(
    element('tr', {}, ...['host', 'zone', 'heads', 'middles', 'tails', 'joining', 'writes/s', 'commit p99'].map((name) => element('th', {}, name))),
    ...hosts.map((host) => element('tr', { 'data-host': host.hostId },
      ...[host.hostId, host.zone ?? '', host.heads, host.middles, host.tails, host.joining, rate(host.writesPerSecond ?? 0), (host.commitP99Ms ?? 0).toFixed(2) + ' ms'].map((cell) => element('td', {}, cell)))));

  const recent = status.reconfigurations ?? [];
  $('reconfigurations').replaceChildren(...(recent.length === 0 ? [element('li', { class: 'none' }, 'none since this host started')] : recent.map((change) =>
    element('li', { 'data-chain': change.chain, 'data-epoch': change.epoch },
      element('time', {}, new Date(change.time).toLocaleTimeString()), ' chain ' + change.chain + ' → epoch ' + change.epoch + ': ' + change.hosts.map((host) => host ?? '?').join(' → ')))));
}

async function poll() {
  try {
    const response = await fetch('status', { headers: token === null ? {} : { authorization: 'Bearer ' + token }, cache: 'no-store' });
    if (!response.ok) throw new Error('GET /status answered ' + response.status);
    render(await response.json());
    $('state').dataset.state = 'ok';
    $('state').textContent = 'live · ' + new Date().toLocaleTimeString();
  } catch (error) {
    $('state').dataset.state = 'error';
    $('state').textContent = String(error.message ?? error);
  }
  setTimeout(poll, 1000);
}
poll();
`;

const STYLE = `
:root { color-scheme: light dark; --ok: #2e9d57; --behind: #d4a017; --down: #c0392b; --line: #3a7bd5; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; }
header { display: flex; gap: 1rem; align-items: baseline; }
h1 { font-size: 1.4rem; margin: 0; } h2 { font-size: 1rem; margin: 1.5rem 0 .5rem; }
#state { margin-left: auto; font-size: .85rem; } #state[data-state=error] { color: var(--down); }
#charts { display: flex; gap: 1.5rem; flex-wrap: wrap; margin-top: 1rem; }
figure { margin: 0; } figcaption b { font-variant-numeric: tabular-nums; }
svg { width: 300px; height: 60px; border: 1px solid #8884; border-radius: 4px; }
polyline { fill: none; stroke: var(--line); stroke-width: 1.5; } text { font-size: 9px; fill: currentColor; opacity: .7; }
.chain { display: flex; align-items: center; gap: .75rem; margin: .35rem 0; }
.chain .label { width: 11rem; font-variant-numeric: tabular-nums; }
.chain ol { display: flex; gap: 0; list-style: none; padding: 0; margin: 0; }
.replica { display: grid; min-width: 6.5rem; padding: .3rem .5rem; border: 2px solid var(--ok); border-radius: 6px; }
.replica + .replica { margin-left: 1.5rem; position: relative; }
.replica + .replica::before { content: '→'; position: absolute; left: -1.2rem; top: 30%; }
.replica[data-health=behind] { border-color: var(--behind); } .replica[data-health=down] { border-color: var(--down); opacity: .6; }
.replica[data-role=joining] { border-style: dashed; }
.role { font-weight: 600; } .host, .lag { font-size: .8rem; opacity: .8; }
table { border-collapse: collapse; } th, td { text-align: left; padding: .2rem .8rem .2rem 0; font-variant-numeric: tabular-nums; }
ol#reconfigurations { padding-left: 1.2rem; } time { opacity: .7; }
`;

/** The page's Content-Security-Policy: its own inline script and style, requests to its own origin only. */
export const STATUS_PAGE_CSP = `default-src 'none'; script-src 'sha256-${createHash('sha256').update(SCRIPT).digest('base64')}'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:`;

export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dabba status</title>
<style>${STYLE}</style>
</head>
<body>
<header><h1>dabba</h1><span id="where"></span><span id="state" data-state="connecting">connecting…</span></header>
<section id="charts">
<figure><figcaption>writes/s <b id="writes-now">–</b></figcaption><svg id="chart-writes" viewBox="0 0 300 60" role="img" aria-label="writes per second"></svg></figure>
<figure><figcaption>commit p99 <b id="p99-now">–</b></figcaption><svg id="chart-p99" viewBox="0 0 300 60" role="img" aria-label="commit latency p99"></svg></figure>
</section>
<h2>Chains</h2>
<div id="chains"></div>
<h2>Hosts</h2>
<table id="hosts"></table>
<h2>Recent reconfigurations</h2>
<ol id="reconfigurations"></ol>
<script>${SCRIPT}</script>
</body>
</html>
`;
