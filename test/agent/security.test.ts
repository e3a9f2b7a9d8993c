// The agent grants no more than a token allows, tried as an attacker holding a uid-bound token
// would: a forged manifest, a stream sent again, another user's images and processes, stalled
// streams by the score, and plain HTTP where TLS is spoken.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  chownSync,
  cpSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  watch,
  writeFileSync,
} from 'node:fs';
import { request, type ClientRequest, type IncomingMessage } from 'node:http';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { before, test } from 'node:test';
import { macOf, streamKey } from '../../src/image/mac.js';
import { sealManifest } from '../../src/image/manifest.js';
import { initHashing } from '../../src/image/hash.js';
import { FRAME, frameHeader, readEvents, type TargetEvent } from '../../src/migrate/wire.js';
import { cleanupAfterAll } from '../helpers/cleanup.js';
import { runCli } from '../helpers/cli.js';
import { CLI, PYTHON } from '../helpers/paths.js';
import { startLogged, startProcess } from '../helpers/processes.js';
import { becomeSubreaper, childrenOf, killAndReap } from '../helpers/reaper.js';

const ADMIN = 'admin-token-0123456789abcdef';
/** nobody (65534) has a group of its own on Debian: nogroup. */
const NOBODY = 'nobody-token-0123456789abcdef';
const NOBODY_UID = 65534;
const STREAMERS = Array.from({ length: 5 }, (_, i) => `stream-token-${i}-0123456789abcdef`);
const SLEEPER = 'print("READY", os.getpid(), flush=True)\nwhile True: time.sleep(0.05)';

const cleanup = cleanupAfterAll();
let work: string;
let tokenFile: string;
let agentPid: number;
let port: number;
let n = 0;

before(async () => {
  becomeSubreaper();
  await initHashing();
  work = mkdtempSync(`${tmpdir()}/ferry-sec-`);
  cleanup(() => rmSync(work, { recursive: true, force: true }));
  chownSync(work, NOBODY_UID, NOBODY_UID); // nobody's processes write and run there
  tokenFile = `${work}/tokens`;
  writeFileSync(tokenFile, [ADMIN, `${NOBODY} uid=${NOBODY_UID}`, ...STREAMERS].join('\n'), { mode: 0o600 });
  ({ pid: agentPid, port } = await startAgent('data'));
});

/** An agent on loopback, its data in `name` under the work directory, with these tokens. */
async function startAgent(name: string, extra: string[] = []): Promise<{ pid: number; port: number }> {
  const agent = await startProcess(CLI, [
    ...['agent', '--listen', '127.0.0.1:0', '--data-dir', `${work}/${name}`, '--token-file', tokenFile],
    ...extra,
  ]);
  cleanup(() => agent.stop());
  return { pid: agent.pid, port: Number(/:(\d+)/.exec(agent.readyLine)![1]) };
}

async function api<T>(path: string, token?: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: (text.startsWith('{') ? JSON.parse(text) : text) as T };
}

/**
 * A python process asleep, nobody's unless `asRoot`, its output in a file nobody owns; `first` is
 * python it runs before.
 */
function sleeper(asRoot = false, first = ''): Promise<number> {
  const out = `${work}/out-${n++}`;
  writeFileSync(out, '');
  chownSync(out, NOBODY_UID, NOBODY_UID);
  const as = asRoot ? [] : [`--reuid=${NOBODY_UID}`, `--regid=${NOBODY_UID}`, '--clear-groups'];
  const code = `import os, time\n${first}\n${SLEEPER}`;
  return startLogged(out, 'setpriv', [...as, PYTHON, '-c', code], /READY/, cleanup);
}

/** The agent's living children: what it restored. */
const restoredNow = (): number[] =>
  childrenOf(agentPid).filter((pid) => !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'latin1')));

/** Open migration `id` under `token`: the request, its response and the nonce the agent gave. */
async function openMigration(
  token: string,
  id: string,
  at = port,
): Promise<{ req: ClientRequest; res: IncomingMessage; nonce: string }> {
  const req = request({
    host: '127.0.0.1',
    port: at,
    method: 'POST',
    path: '/v1/migrations',
    headers: { authorization: `Bearer ${token}`, 'ferry-migration-id': id },
  });
  req.on('error', () => {});
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    req.on('response', resolve).on('error', reject);
    req.flushHeaders();
  });
  return { req, res, nonce: String(res.headers['ferry-nonce']) };
}

/** A migration's body as a source sends it: the image's parts, `manifest`, and `seal`. */
function body(image: string, manifest: Buffer, seal: Buffer): Buffer {
  const frames: Buffer[] = [];
  for (const name of Object.keys((JSON.parse(manifest.toString()) as { parts: object }).parts)) {
    const data = readFileSync(`${image}/${name}`);
    frames.push(frameHeader(FRAME.PART, name, data.length), data);
  }
  frames.push(frameHeader(FRAME.MANIFEST, '', manifest.length), manifest);
  frames.push(frameHeader(FRAME.SEAL, '', seal.length), seal);
  return Buffer.concat(frames);
}

/** Send `bytes` as the body of migration `id` under `token`; the agent's events, up to the last. */
/**
 * Send `bytes` as the body of migration `id` under `token`, and commit what is restored (the
 * migration ends: it counts no more against the token's streams); the agent's events.
 */
async function send(token: string, id: string, bytes: (nonce: string) => Buffer): Promise<TargetEvent[]> {
  const { req, res, nonce } = await openMigration(token, id);
  req.write(bytes(nonce));
  const events: TargetEvent[] = [];
  for await (const e of readEvents(res)) {
    events.push(e);
    if (e.event === 'restored') req.end(frameHeader(FRAME.COMMIT, '', 0));
    if (e.event === 'running' || e.event === 'error') break;
  }
  req.destroy();
  return events;
}

/** Stream `image` with `manifest` as a new migration under `token`, sealed as ferry seals it. */
function stream(image: string, manifest: Buffer, token: string): Promise<TargetEvent[]> {
  const id = `m-${n++}-0123456789`;
  return send(token, id, (nonce) =>
    body(image, manifest, Buffer.from(macOf(streamKey(token, id, nonce), manifest))),
  );
}

/** A dump of `pid` made by root, left running; its directory. */
async function dumpOf(pid: number): Promise<string> {
  const image = mkdtempSync(`${work}/image-`);
  const r = await runCli(['dump', String(pid), '-D', image, '--leave-running']);
  assert.equal(r.code, 0, r.stderr);
  return image;
}

/** The image's manifest edited by `edit`, and sealed again with the project's own code (S1). */
function forged(image: string, edit: (m: { state: Record<string, unknown> }) => void): Buffer {
  const m = JSON.parse(readFileSync(`${image}/manifest.json`, 'utf8')) as { state: Record<string, unknown> };
  delete (m as { checksum?: string }).checksum;
  edit(m);
  return Buffer.from(sealManifest(m).text);
}

const outcome = (events: TargetEvent[]): string[] =>
  events.map((e) => ('code' in e ? `${e.event} ${e.code}` : e.event));

test("a uid-bound token's own process migrates in; a manifest forged to root is refused before anything runs", async () => {
  const image = await dumpOf(await sleeper());
  const manifest = readFileSync(`${image}/manifest.json`);
  // Its own process, as it is: restored, held, as nobody.
  const own = await stream(image, manifest, NOBODY);
  const restored = own.find((e) => e.event === 'restored');
  assert.ok(restored, JSON.stringify(own));
  assert.match(
    readFileSync(`/proc/${restored.pid}/status`, 'latin1'),
    /^Uid:\s+65534\s+65534\s+65534\s+65534$/m,
  );
  killAndReap(restored.pid);
  const before = restoredNow();
  // uid 0 for effective, saved and filesystem, and every capability: refused, nothing spawned.
  const root = forged(image, (m) => {
    const creds = m.state.creds as { uids: number[]; caps: Record<string, string> };
    creds.uids = [NOBODY_UID, 0, 0, 0];
    creds.caps.effective = creds.caps.permitted = '0x1fffeffffff';
  });
  const refused = await stream(image, root, NOBODY);
  assert.deepEqual(outcome(refused), ['error FERRY_AUTH']);
  assert.match(JSON.stringify(refused), /uid 0/);
  // A descriptor on a file nobody may read: the restore opens it as nobody, and the kernel refuses.
  const shadow = forged(image, (m) => {
    (m.state.files as object[]).push({
      kind: 'file',
      fd: 9,
      flags: 0,
      path: '/etc/shadow',
      pos: '0x0',
      ghost: null,
    });
  });
  const opened = await stream(image, shadow, NOBODY);
  assert.equal(opened.at(-1)!.event, 'error', JSON.stringify(opened));
  assert.match(JSON.stringify(opened), /\/etc\/shadow.*EACCES/);
  assert.deepEqual(restoredNow(), before, 'the agent runs nothing new');
});

test("a deleted file comes back made by the user's own hands; a forged path in root's directory is not made", async () => {
  const ghost = `${work}/ghost-${n++}`;
  const image = await dumpOf(
    await sleeper(
      false,
      `f = open("${ghost}", "w+")\nf.write("kept " * 100)\nf.flush()\nos.unlink("${ghost}")`,
    ),
  );
  const manifest = readFileSync(`${image}/manifest.json`);
  const own = await stream(image, manifest, NOBODY);
  const restored = own.find((e) => e.event === 'restored');
  assert.ok(restored, JSON.stringify(own));
  cleanup(() => killAndReap(restored.pid));
  assert.equal(readFileSync(`/proc/${restored.pid}/fd/3`, 'latin1'), 'kept '.repeat(100));
  assert.equal(statSync(`/proc/${restored.pid}/fd/3`).uid, NOBODY_UID);
  killAndReap(restored.pid);
  // The same, said to be a file in a directory only root may write: made elsewhere, by nobody.
  const rootOnly = mkdtempSync(`${tmpdir()}/ferry-root-only-`);
  cleanup(() => rmSync(rootOnly, { recursive: true, force: true }));
  const made: string[] = [];
  const watcher = watch(rootOnly, (_, name) => made.push(String(name)));
  cleanup(() => watcher.close());
  const planted = forged(image, (m) => {
    const file = (m.state.files as { fd: number; path: string }[]).find((f) => f.fd === 3)!;
    file.path = `${rootOnly}/planted`;
  });
  const elsewhere = await stream(image, planted, NOBODY);
  const moved = elsewhere.find((e) => e.event === 'restored');
  assert.ok(moved, JSON.stringify(elsewhere));
  cleanup(() => killAndReap(moved.pid));
  assert.equal(readFileSync(`/proc/${moved.pid}/fd/3`, 'latin1'), 'kept '.repeat(100));
  await new Promise((r) => setTimeout(r, 200)); // the watcher's events come in
  assert.deepEqual(made, [], `made in ${rootOnly}`);
});

test('a stream sent again, under another migration or the same, is refused before anything runs', async () => {
  const image = await dumpOf(await sleeper());
  const manifest = readFileSync(`${image}/manifest.json`);
  // The body of a migration as its source sent it, kept (as anyone on a plain HTTP path could).
  let sent: Buffer = Buffer.alloc(0);
  const id = `first-0123456789`;
  const first = await send(NOBODY, id, (nonce) => {
    sent = body(image, manifest, Buffer.from(macOf(streamKey(NOBODY, id, nonce), manifest)));
    return sent;
  });
  const restored = first.find((e) => e.event === 'restored');
  assert.ok(restored, JSON.stringify(first));
  cleanup(() => killAndReap(restored.pid));
  const before = restoredNow();
  for (const again of [`replayed-0123456789`, `replayed-9876543210`]) {
    const replay = await send(NOBODY, again, () => sent);
    assert.deepEqual(outcome(replay), ['error FERRY_AUTH']);
    assert.match(JSON.stringify(replay), /not sealed for it/);
  }
  // The same id again: the agent has it already.
  const same = await openMigration(NOBODY, id).catch(() => undefined);
  assert.equal(same?.res.statusCode, 409);
  same?.req.destroy();
  assert.deepEqual(restoredNow(), before, 'the agent runs nothing new');
});

test("a uid-bound token sees and touches only its uid's images, processes and migrations", async () => {
  const [mine, theirs] = [await sleeper(), await sleeper(true)];
  // The same image name, each in its own namespace: neither overwrites the other.
  assert.equal((await api('/v1/dump', NOBODY, { pid: mine, image: 'job', leaveRunning: true })).status, 200);
  assert.equal((await api('/v1/dump', ADMIN, { pid: theirs, image: 'job', leaveRunning: true })).status, 200);
  assert.equal((await api('/v1/dump', NOBODY, { pid: theirs, image: 'x', leaveRunning: true })).status, 403);
  const back = await api<{ pid: number; originalPid: number }>('/v1/restore', NOBODY, { image: 'job' });
  assert.equal(back.status, 200, JSON.stringify(back.body));
  cleanup(() => killAndReap(back.body.pid));
  assert.equal(back.body.originalPid, mine);
  const admins = await api<{ pid: number; originalPid: number }>('/v1/restore', ADMIN, { image: 'job' });
  assert.equal(admins.status, 200, JSON.stringify(admins.body));
  cleanup(() => killAndReap(admins.body.pid));
  assert.equal(admins.body.originalPid, theirs);
  // Its own, and none of anyone else's (the migrations of the tests before are nobody's too).
  const listed = await api<{ processes: { pid: number; uid: number }[] }>('/v1/processes', NOBODY);
  assert.ok(listed.body.processes.some((p) => p.pid === back.body.pid));
  assert.deepEqual(new Set(listed.body.processes.map((p) => p.uid)), new Set([NOBODY_UID]));
  const all = await api<{ processes: { pid: number }[] }>('/v1/processes', ADMIN);
  assert.ok(all.body.processes.some((p) => p.pid === admins.body.pid));
  // Another's migration, coming in: not found, for a look and a commit alike.
  const coming = await openMigration(ADMIN, 'admins-0123456789');
  cleanup(() => void coming.req.destroy());
  assert.equal((await api('/v1/migrations/admins-0123456789', NOBODY)).status, 404);
  assert.equal((await api('/v1/migrations/admins-0123456789/commit', NOBODY, {})).status, 404);
  assert.equal((await api('/v1/migrations/admins-0123456789', ADMIN)).status, 200);
  coming.req.destroy();
  // An image in its namespace that the agent did not write (copied, its seal made up) is refused.
  const ns = `${work}/data/images/uid-${NOBODY_UID}`;
  cpSync(`${ns}/job`, `${ns}/copied`, { recursive: true });
  writeFileSync(`${ns}/copied/manifest.mac`, `${'0'.repeat(64)}\n`);
  const copied = await api<{ error: { message: string } }>('/v1/restore', NOBODY, { image: 'copied' });
  assert.equal(copied.status, 403, JSON.stringify(copied.body));
  assert.match(copied.body.error.message, /not as this agent wrote it/);
});

test('20 stalled streams, each 63 MiB into a 64 MiB frame: 4 refused (429), the agent stays small', async () => {
  const agent = await startAgent('stalled'); // its limits: 16 streams, 4 of each token
  const held: ClientRequest[] = [];
  cleanup(() => held.forEach((req) => req.destroy()));
  const refusals: string[] = [];
  for (const [i, token] of [...STREAMERS, ...STREAMERS, ...STREAMERS, ...STREAMERS].entries()) {
    const { req, res } = await openMigration(token, `stall-${i}-0123456789`, agent.port);
    held.push(req);
    if (res.statusCode !== 200) {
      refusals.push(`${res.statusCode} ${await text(res)}`);
      continue;
    }
    res.resume();
    req.write(frameHeader(FRAME.PART, 'pages.img', 64 << 20));
    // Taken in before the next comes: to disk, or stuck in the agent's memory.
    if (!req.write(Buffer.alloc(63 << 20, 1))) await new Promise((r) => req.once('drain', r));
  }
  assert.equal(refusals.length, 4, refusals.join('\n'));
  for (const r of refusals) assert.match(r, /^429 .*"FERRY_LIMIT".*the most this agent takes/);
  const rss =
    Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${agent.pid}/status`, 'latin1'))![1]) << 10;
  assert.ok(rss < 300 << 20, `the agent holds ${(rss / 2 ** 20).toFixed(0)} MiB`);
  // A token's fifth stream at once is refused as such.
  const fifth = await openMigration(STREAMERS[0]!, 'fifth-0123456789');
  const others = await Promise.all(
    [1, 2, 3, 4].map((i) => openMigration(STREAMERS[0]!, `fifth-${i}-0123456789`)),
  );
  held.push(fifth.req, ...others.map((o) => o.req));
  const statuses = [fifth, ...others].map((o) => o.res.statusCode);
  assert.deepEqual(statuses, [200, 200, 200, 200, 429]);
  assert.match(await text(others[3]!.res), /migrations of this token are coming in already/);
  held.forEach((req) => req.destroy());
});

/** A response's whole body. */
async function text(res: IncomingMessage): Promise<string> {
  let all = '';
  for await (const chunk of res as AsyncIterable<Buffer>) all += chunk.toString();
  return all;
}

test('plain HTTP to a TLS agent is told so, and carries no token; health for anyone, metrics with a token', async () => {
  const [cert, key] = [`${work}/cert.pem`, `${work}/key.pem`];
  execFileSync(
    'openssl',
    [
      ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'],
      ...['-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1'],
    ],
    { stdio: 'ignore' },
  );
  const tls = await startAgent('tls', ['--tls-cert', cert, '--tls-key', key]);
  // Every byte the client sends, on its way to the TLS agent.
  let seen = '';
  const sockets: Socket[] = [];
  const tap = createServer((client) => {
    const upstream = createConnection(tls.port, '127.0.0.1');
    sockets.push(client, upstream);
    client.on('data', (d: Buffer) => (seen += d.toString('latin1')));
    client.pipe(upstream).pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((resolve) => tap.listen(0, '127.0.0.1', resolve));
  cleanup(() => {
    sockets.forEach((s) => s.destroy());
    tap.close();
  });
  const to = `127.0.0.1:${(tap.address() as { port: number }).port}`;
  const pid = await sleeper(true);
  const plain = await runCli(['migrate', String(pid), '--to', to, '--token-file', tokenFile]);
  assert.equal(plain.code, 1, plain.stderr);
  assert.match(plain.stderr, /speaks TLS: pass --tls-ca/);
  assert.ok(seen.includes('GET /v1/health'), 'the client asked');
  assert.ok(!seen.includes(ADMIN), 'the token went out in clear');
  // Not beyond loopback without TLS, unless asked for by name.
  const open = spawnSync(CLI, ['agent', '--listen', '0.0.0.0:0', '--data-dir', `${work}/open`, '--no-auth'], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  assert.equal(open.status, 2, open.stderr);
  assert.match(
    open.stderr,
    /not a loopback address: serve TLS there \(--tls-cert and --tls-key\), or plain HTTP by name \(--insecure\)/,
  );
  // Health for anyone, revealing nothing; metrics and status only with a token.
  const health = await api<{ ok: boolean }>('/v1/health');
  assert.deepEqual([health.status, health.body], [200, { ok: true }]);
  assert.equal((await api('/metrics')).status, 401);
  assert.equal((await api('/metrics', ADMIN)).status, 200);
  assert.equal((await api('/v1/status')).status, 401);
});
