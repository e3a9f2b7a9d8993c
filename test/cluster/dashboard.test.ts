// The balancer's web dashboard in a real browser (Debian's chromium, headless, driven by
// puppeteer-core): hosts with their load charts and jobs, a migration the balancer made, a host
// drained and undrained from its buttons, pushed live; behind the balancer's token. A screenshot
// of it is saved (FERRY_SCREENSHOT=<file> to keep one, as docs/dashboard.png was).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, readFileSync, statSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { join } from 'node:path';
import { before, test } from 'node:test';
import puppeteer, { type Browser } from 'puppeteer-core';
import { cleanupAfterAll } from '../helpers/cleanup.js';
import { clusterLab, load, run, SPIN, TOKEN, until, type ClusterLab } from '../helpers/cluster.js';
import { runCli } from '../helpers/cli.js';
import { CLI, PYTHON } from '../helpers/paths.js';
import { startProcess } from '../helpers/processes.js';

const CHROMIUM = '/usr/bin/chromium';
const cleanup = cleanupAfterAll();
let lab: ClusterLab;

before(() => {
  lab = clusterLab('ferry-dashboard-', cleanup);
});

async function browser(): Promise<Browser> {
  const b = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: join(lab.work, 'chromium'),
    // As root Chromium needs --no-sandbox; the rest keep it from reaching out to the network.
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  cleanup(() => b.close());
  return b;
}

test('the dashboard shows hosts, load charts, jobs and migrations live, and drains and undrains a host', async () => {
  const [a, b] = [await lab.startAgent(), await lab.startAgent()];
  for (const name of ['one', 'two', 'three']) await run(lab, a, ['--', PYTHON, '-c', SPIN], name);
  await until('CPU time', async () =>
    (await load(a)).jobs.every((j) => j.cpuSeconds > 0.4) ? true : undefined,
  );
  const balancer = await startProcess(CLI, [
    ...['balancer', '--peers', `${a.address},${b.address}`, '--token-file', lab.tokenFile],
    ...['--interval', '500', '--http', '127.0.0.1:0', '--json'],
  ]);
  cleanup(() => balancer.stop());
  const { url } = JSON.parse(balancer.readyLine) as { url: string };

  // Behind the token: none, none; the right one as a bearer, or once in the address, then a cookie.
  assert.equal((await fetch(`${url}api/state`)).status, 401);
  assert.equal((await fetch(`${url}?token=wrong`, { redirect: 'manual' })).status, 401);
  const state = await fetch(`${url}api/state`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(state.status, 200);
  const forged = await fetch(`${url}api/drain`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'text/plain' },
    body: JSON.stringify({ host: a.address }),
  });
  assert.equal(forged.status, 415, 'a form post from another site is refused');

  const page = await (await browser()).newPage();
  await page.setViewport({ width: 1280, height: 900 });
  await page.goto(`${url}?token=${TOKEN}`);
  assert.equal(page.url(), url, 'the token left the address bar');
  await page.waitForSelector('#live.on');
  const card = (host: string) => `article.host[data-host="${host}"]`;
  await page.waitForSelector(`${card(a.address)} tr.job`);
  // (What the page shows, read in the page: the test is compiled without the DOM's types.)
  const inPage = <T>(expression: string): Promise<T> => page.evaluate(expression) as Promise<T>;
  assert.equal(await inPage<number>(`document.querySelectorAll('article.host').length`), 2);
  assert.match(
    await inPage<string>(`document.querySelector('#who').textContent`),
    /static peers · leading · 2 hosts, 3 jobs/,
  );

  // The balancer moves a job off the busy host: the page shows it live, with its downtime.
  await page.waitForSelector('tr.migration.moved', { timeout: 30_000 });
  const moved = await inPage<string[]>(
    `[...document.querySelector('tr.migration.moved').children].map((td) => td.textContent)`,
  );
  assert.equal(moved[2], `${a.address} → ${b.address}`);
  assert.match(moved[5]!, /^\d+(\.\d+)? m?s$/, `downtime ${moved[5]}`);
  await page.waitForSelector(`${card(b.address)} tr.job`);
  const points = await inPage<string>(
    `document.querySelector(${JSON.stringify(`${card(a.address)} svg.chart polyline`)}).getAttribute('points')`,
  );
  assert.ok(points.split(' ').length >= 2, `load over time: ${points}`);

  // Drain from its button: every job moves off, the host says drained; undrain opens it again.
  // Clicked in the page, in one turn of its own: every state the page hears redraws the cards, and
  // a button found by one call and clicked by the next may be gone in between.
  const click = (selector: string): Promise<void> =>
    inPage<void>(`document.querySelector(${JSON.stringify(selector)}).click()`);
  await click(`${card(a.address)} button.drain`);
  await page.waitForSelector(`${card(a.address)} .badge.drained`);
  const drainState = `${card(a.address)} .drain-state`;
  await page.waitForFunction(
    `document.querySelector(${JSON.stringify(drainState)})?.textContent.startsWith('drained')`,
    { timeout: 60_000 },
  );
  await page.waitForSelector(`${card(a.address)} .jobs-none`);
  assert.equal((await load(a)).jobs.length, 0);
  assert.equal((await load(b)).jobs.length, 3, 'every job runs on, on b');
  const shot = join(lab.work, 'dashboard.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(statSync(shot).size > 20_000, 'a screenshot of the page');
  if (process.env.FERRY_SCREENSHOT) copyFileSync(shot, process.env.FERRY_SCREENSHOT);
  await click(`${card(a.address)} button.undrain`);
  await page.waitForSelector(`${card(a.address)} button.drain`);
  assert.equal((await load(a)).host.drained, false);
});

test('the dashboard over TLS, behind the token; plain HTTP beyond loopback is refused', async () => {
  const [cert, key] = [join(lab.work, 'dash.crt'), join(lab.work, 'dash.key')];
  execFileSync(
    'openssl',
    [
      ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'],
      ...['-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1'],
      ...['-addext', 'subjectAltName=IP:127.0.0.1'],
    ],
    { stdio: 'ignore' },
  );
  const [a, b] = [await lab.startAgent({ cpus: null }), await lab.startAgent({ cpus: null })];
  const peers = `${a.address},${b.address}`;
  const balancer = await startProcess(CLI, [
    ...['balancer', '--peers', peers, '--token-file', lab.tokenFile, '--json'],
    ...['--http', '127.0.0.1:0', '--tls-cert', cert, '--tls-key', key],
  ]);
  cleanup(() => balancer.stop());
  const { url } = JSON.parse(balancer.readyLine) as { url: string };
  assert.match(url, /^https:\/\/127\.0\.0\.1:\d+\/$/);
  const status = (path: string, token?: string): Promise<number> =>
    new Promise((resolve, reject) =>
      httpsGet(
        `${url}${path}`,
        { ca: readFileSync(cert), headers: token ? { authorization: `Bearer ${token}` } : {} },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      ).on('error', reject),
    );
  assert.equal(await status('api/state'), 401);
  assert.equal(await status('api/state', TOKEN), 200);
  const open = await runCli(['balancer', '--peers', peers, '--http', '0.0.0.0:0']);
  assert.equal(open.code, 2, open.stderr);
  assert.match(open.stderr, /not a loopback address: serve TLS there/);
});
