// Live migration between hosts made of network namespaces, an agent in each, through the ferry CLI:
// processes move and carry on; every fault leaves the source running with its state intact and
// nothing at the target.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import { basename } from 'node:path';
import { test } from 'node:test';
import { macOf, streamKey } from '../src/image/mac.js';
import { FRAME, frameHeader, readEvents } from '../src/migrate/wire.js';
import { kernelTracksSoftDirty } from '../src/vma/pages.js';
import { cleanupAfterAll } from './helpers/cleanup.js';
import { runCli, type CliResult } from './helpers/cli.js';
import { compute, fileContent } from './helpers/compute.js';
import {
  api,
  corruptingRelay,
  LIMITED_TOKEN,
  migrateCli as migrateWith,
  PORT,
  runsFree,
  setUpLab,
  startAgentOn as startAgent,
  targetClean,
  TOKEN,
  type AgentProc,
} from './helpers/agents.js';
import { limitRate, setLink, type Host } from './helpers/netns.js';
import { PYTHON } from './helpers/paths.js';
import { startLogged, traceState } from './helpers/processes.js';
import { checkKeys, KEYS, loadKeys, REDIS_OPTIONS, redisCli } from './helpers/redis.js';
import { killAndReap } from './helpers/reaper.js';
import { assertUntracked, startSelfChecking, type SelfChecking } from './helpers/self-check.js';
import { startStateFixture, type StateFixture } from './helpers/state-fixture.js';
import { startConforming } from './helpers/conformance.js';

const cleanup = cleanupAfterAll();
const lab = setUpLab(3, 'ferry-mig', cleanup);
const dir = (): string => lab.dir();
const startAgentOn = (host: Host, dataDir?: string, options?: { port?: number; extra?: string[] }) =>
  startAgent(lab, host, dataDir, options);
const migrateCli = (from: Host, pid: number, to: Host | string, ...extra: string[]): Promise<CliResult> =>
  migrateWith(lab, from, pid, to, extra);

interface Migrated {
  targetPid: number;
  downtimeMs: number;
  totalMs: number;
  bytesSent: number;
  rounds: number;
}

function migrated(r: CliResult): Migrated {
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const out = JSON.parse(r.stdout) as Migrated;
  cleanup(() => killAndReap(out.targetPid));
  return out;
}

const memload = (mib: number): Promise<SelfChecking> =>
  startSelfChecking(dir(), 'memload', [String(mib), 'random'], cleanup);

async function started(): Promise<StateFixture> {
  const f = await startStateFixture(dir());
  cleanup(() => f.stop());
  return f;
}

let agents: AgentProc[];

test('agents start on three hosts; without the token they answer 401', async () => {
  agents = [await startAgentOn(lab.hosts[0]!), await startAgentOn(lab.hosts[1]!)];
  const health = await api<{ ok: boolean }>(lab.hosts[0]!, '/v1/health');
  assert.deepEqual([health.status, health.body.ok], [200, true]);
  const refused = await api<{ error: { code: string } }>(
    lab.hosts[0]!,
    '/v1/status',
    'wrong-token-0123456789',
  );
  assert.deepEqual([refused.status, refused.body.error.code], [401, 'FERRY_AUTH']);
});

test('the C fixture migrates to another host and back, carrying on where it stopped', async () => {
  const f = await started();
  assert.match(await f.verify(), /^PASS 1 /);
  const there = migrated(await migrateCli(lab.hosts[0]!, f.pid, lab.hosts[1]!));
  assert.equal(there.rounds, 1);
  assert.ok(there.bytesSent > 0 && there.downtimeMs > 0 && there.totalMs >= there.downtimeMs);
  assert.match(await f.verify(there.targetPid), /^PASS 2 /, 'the counter carried on at the target');
  const { body } = await api<{ processes: { pid: number; state: string }[] }>(lab.hosts[1]!, '/v1/processes');
  assert.deepEqual(
    body.processes.filter((p) => p.pid === there.targetPid).map((p) => p.state),
    ['running'],
  );
  assert.deepEqual(readdirSync(`${agents[1]!.dataDir}/migrations`), [], 'the received image is gone');
  const back = migrated(await migrateCli(lab.hosts[1]!, there.targetPid, lab.hosts[0]!));
  assert.match(await f.verify(back.targetPid), /^PASS 3 /);
  const metrics = await api<string>(lab.hosts[1]!, '/metrics');
  assert.match(metrics.body, /^ferry_migrations_received\{state="running"\} 1$/m);
});

/** POST a JSON body to the agent on `host`. */
async function post<T>(
  host: Host,
  path: string,
  body: unknown,
  token = TOKEN,
): Promise<{ status: number; body: T }> {
  const res = await fetch(`http://${host.addr}:${PORT}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as T };
}

test("the agent's API dumps a process into its data directory and restores it from there", async () => {
  const f = await started();
  const image = `api-${basename(dir())}`;
  // A token limited to another uid may not touch a root process, nor read its image.
  const refused = await post<{ error: { code: string } }>(
    lab.hosts[0]!,
    '/v1/dump',
    { pid: f.pid },
    LIMITED_TOKEN,
  );
  assert.equal(refused.status, 403);
  const dumped = await post<{ image: string; frozenMs: number; leftRunning: boolean }>(
    lab.hosts[0]!,
    '/v1/dump',
    {
      pid: f.pid,
      image,
      leaveRunning: true,
    },
  );
  assert.equal(dumped.status, 200, JSON.stringify(dumped.body));
  assert.equal(dumped.body.image, image);
  assert.ok(dumped.body.frozenMs > 0 && dumped.body.leftRunning);
  runsFree(f.pid);
  assert.ok(readdirSync(`${agents[0]!.dataDir}/images/${image}`).includes('manifest.json'));
  // A token bound to another uid does not see the image (images are per uid): as if there were none.
  assert.equal((await post(lab.hosts[0]!, '/v1/restore', { image }, LIMITED_TOKEN)).status, 404);
  assert.equal((await post(lab.hosts[0]!, '/v1/restore', { image: 'no-such-image' })).status, 404);
  assert.equal((await post(lab.hosts[0]!, '/v1/dump', { pid: 'x' })).status, 400);
  // The original runs on, so the copy takes a new PID; both carry the fixture's state.
  const restored = await post<{ pid: number; originalPid: number }>(lab.hosts[0]!, '/v1/restore', { image });
  assert.equal(restored.status, 200, JSON.stringify(restored.body));
  cleanup(() => killAndReap(restored.body.pid));
  assert.equal(restored.body.originalPid, f.pid);
  assert.notEqual(restored.body.pid, f.pid);
  assert.match(await f.verify(restored.body.pid), /^PASS /);
  assert.match(await f.verify(), /^PASS /);
  const { body } = await api<{ processes: { pid: number; origin: string; state: string }[] }>(
    lab.hosts[0]!,
    '/v1/processes',
  );
  assert.deepEqual(
    body.processes.filter((p) => p.pid === restored.body.pid).map((p) => [p.origin, p.state]),
    [['restore', 'running']],
  );
});

let reference: string | undefined;

for (const mode of ['stop-copy', 'pre-copy', 'post-copy', 'hybrid']) {
  test(`python3 migrated midway (${mode}) there and back finishes with the result of an uninterrupted run`, async () => {
    const rounds = 8_000_000;
    if (!reference) {
      reference = `${dir()}/result`;
      await compute(reference, rounds, cleanup).done;
    }
    const out = `${dir()}/result`;
    const run = compute(out, rounds, cleanup);
    await fileContent(`${out}.started`);
    const there = migrated(await migrateCli(lab.hosts[0]!, run.pid, lab.hosts[1]!, '--mode', mode));
    const precopied = mode === 'pre-copy' || mode === 'hybrid';
    assert.equal(there.rounds > 1, precopied);
    const back = migrated(await migrateCli(lab.hosts[1]!, there.targetPid, lab.hosts[0]!, '--mode', mode));
    assert.equal(back.rounds > 1, precopied);
    await run.done;
    assert.equal(await fileContent(out, /^[0-9a-f]{64}$/), readFileSync(reference, 'utf8'));
  });
}

test('a wrong token is refused before the process is frozen', async () => {
  const f = await started();
  const bad = `${lab.work}/bad-token`;
  writeFileSync(bad, 'not-the-token-0123456789\n');
  const r = await runCli(
    ['migrate', String(f.pid), '--to', `${lab.hosts[1]!.addr}:${PORT}`, '--token-file', bad],
    {
      wrap: lab.hosts[0]!.exec,
    },
  );
  assert.equal(r.code, 1);
  assert.match(r.stderr, /refused \(401\)/);
  runsFree(f.pid);
  assert.match(await f.verify(), /^PASS 1 /);
});

test('a process with a TCP connection: migrate says what to do instead, and the process runs on', async () => {
  const out = `${dir()}/out`;
  const code = [
    'import os, socket, time',
    'os.closerange(3, 65536)',
    "l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)",
    'c = socket.create_connection(l.getsockname()); s, _ = l.accept()',
    "print('READY', flush=True)",
    'time.sleep(600)',
  ].join('\n');
  const pid = await startLogged(out, PYTHON, ['-c', code], /^READY\n/, cleanup);
  const r = await migrateCli(lab.hosts[0]!, pid, lab.hosts[1]!);
  assert.equal(r.code, 1, r.stdout);
  const { error } = JSON.parse(r.stdout) as { error: { code: string; message: string } };
  assert.equal(error.code, 'FERRY_MIGRATION_FAILED', error.message);
  assert.match(error.message, /is a TCP connection \(127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+\)/);
  assert.match(error.message, /close it first, or checkpoint with 'ferry dump --tcp-established'/);
  assert.doesNotMatch(error.message, /was not given/);
  assert.match(error.message, /; the process runs on here$/);
  runsFree(pid);
});

/**
 * Migrate 64 MiB to host 1 at 200 Mbit/s, `fault` striking 0.8 s into the stream; the migration must
 * fail and the source run on intact. `repair` undoes the fault.
 */
async function faultMidStream(
  fault: () => Promise<void> | void,
  repair: () => void,
  ...extra: string[]
): Promise<string> {
  const m = await memload(64);
  limitRate(lab.hosts[1]!, '200mbit');
  let r: CliResult;
  try {
    const migration = migrateCli(lab.hosts[0]!, m.pid, lab.hosts[1]!, '--timeout', '2000', ...extra);
    await new Promise((resolve) => setTimeout(resolve, 800));
    await fault();
    r = await migration;
  } finally {
    repair();
    limitRate(lab.hosts[1]!, undefined);
  }
  assert.equal(r.code, 1, r.stdout);
  runsFree(m.pid);
  assertUntracked(m.pid);
  assert.equal(await m.check(), 'CHECK ok');
  return (JSON.parse(r.stdout) as { error: { code: string } }).error.code;
}

test('the target agent killed mid-stream: the source runs on intact; a new agent finds nothing left', async () => {
  const code = await faultMidStream(
    () => agents[1]!.process.stop(),
    () => {},
  );
  assert.equal(code, 'FERRY_MIGRATION_FAILED');
  const restarted = await startAgentOn(lab.hosts[1]!, agents[1]!.dataDir);
  agents[1] = restarted;
  await targetClean(restarted);
});

test('a target agent killed while it holds the restored process takes that process with it', async () => {
  // A source that stops after "restored", as if the agent died before the commit came.
  const f = await started();
  const image = dir();
  const dumped = await runCli(['dump', String(f.pid), '-D', image, '--leave-running']);
  assert.equal(dumped.code, 0, dumped.stderr);
  const manifest = readFileSync(`${image}/manifest.json`);
  const id = randomUUID();
  const req = request({
    host: lab.hosts[1]!.addr,
    port: PORT,
    method: 'POST',
    path: '/v1/migrations',
    headers: { authorization: `Bearer ${TOKEN}`, 'ferry-migration-id': id },
  });
  const response = new Promise<IncomingMessage>((resolve, reject) =>
    req.on('response', resolve).on('error', reject),
  );
  req.flushHeaders();
  const nonce = String((await response).headers['ferry-nonce']);
  const parts = Object.keys((JSON.parse(manifest.toString()) as { parts: object }).parts);
  for (const name of parts) {
    const data = readFileSync(`${image}/${name}`);
    req.write(frameHeader(FRAME.PART, name, data.length));
    req.write(data);
  }
  req.write(frameHeader(FRAME.MANIFEST, '', manifest.length));
  req.write(manifest);
  const seal = Buffer.from(macOf(streamKey(TOKEN, id, nonce), manifest));
  req.write(frameHeader(FRAME.SEAL, '', seal.length));
  req.write(seal);
  let held = 0;
  for await (const event of readEvents(await response)) {
    if (event.event === 'restored') {
      held = event.pid;
      break;
    }
  }
  assert.ok(held > 0, 'the agent restored the process and holds it');
  cleanup(() => killAndReap(held));
  assert.equal(traceState(held).state, 'T', 'held: stopped');
  await agents[1]!.process.stop();
  req.destroy();
  // The held process got SIGKILL with its parent's death, and came to us (the subreaper) to reap.
  for (let i = 0; i < 100 && !/^State:\s+Z/m.test(readFileSync(`/proc/${held}/status`, 'utf8')); i++)
    await new Promise((r) => setTimeout(r, 20));
  assert.match(readFileSync(`/proc/${held}/status`, 'utf8'), /^State:\s+Z/m, 'the held process is dead');
  killAndReap(held);
  assert.match(await f.verify(), /^PASS 1 /, 'the source runs on');
  agents[1] = await startAgentOn(lab.hosts[1]!, agents[1]!.dataDir);
  await targetClean(agents[1]);
});

test('the link to the target cut mid-stream: the source runs on intact, the target cleans up', async () => {
  const code = await faultMidStream(
    () => setLink(lab.hosts[1]!, false),
    () => setLink(lab.hosts[1]!, true),
  );
  assert.equal(code, 'FERRY_MIGRATION_FAILED');
  await targetClean(agents[1]!);
});

test('pre-copy: a process rewriting its memory migrates there and back with no page left stale', async () => {
  // 64 MiB rewritten at 20 MB/s: every round copies what was written during the one before.
  const d = await startSelfChecking(dir(), 'dirty', ['64', '20'], cleanup);
  interface PrecopyResult extends Migrated {
    mode: string;
    precopyRounds: { bytes: number; leftBytes: number; prefilled: boolean }[];
    finalPages: number;
    unchangedPages: number;
  }
  const go = async (from: Host, pid: number, to: Host): Promise<PrecopyResult> => {
    const r = await migrateCli(from, pid, to, '--mode', 'pre-copy', '--max-downtime', '100');
    const out = migrated(r) as PrecopyResult;
    assert.equal(out.mode, 'pre-copy');
    assert.equal(out.rounds, out.precopyRounds.length + 1);
    assert.ok(out.precopyRounds[0]!.bytes >= 64 << 20, 'the first round copies all the memory');
    // The target restored each round into the new process as it came (prefill): what the final
    // restore had to fix up from later layers shows in the check below.
    assert.ok(
      out.precopyRounds.every((r) => r.prefilled),
      'every round was prefilled',
    );
    // Most pages went in the rounds: the frozen copy sent only what was written since the last.
    assert.ok(out.unchangedPages > 2 * out.finalPages, `${out.finalPages} pages sent frozen`);
    return out;
  };
  const there = await go(lab.hosts[0]!, d.pid, lab.hosts[1]!);
  assertUntracked(there.targetPid);
  assert.match(await d.check(there.targetPid), /^CHECK ok \d+$/);
  const back = await go(lab.hosts[1]!, there.targetPid, lab.hosts[0]!);
  const line = await d.check(back.targetPid);
  assert.match(line, /^CHECK ok \d+$/);
  await new Promise((resolve) => setTimeout(resolve, 200));
  const later = await d.check(back.targetPid);
  assert.ok(Number(later.split(' ')[2]) > Number(line.split(' ')[2]), 'it keeps writing after two moves');
});

test('pre-copy of writes scattered at random: every page right, the staged rounds and the final copy interleaved', async () => {
  // Each round's pages lie one here, one there: the target lays later layers over the staged ones
  // page by page, and must write exactly those the staging does not hold already.
  const d = await startSelfChecking(dir(), 'dirty', ['128', '40', 'random'], cleanup);
  const r = migrated(
    await migrateCli(lab.hosts[0]!, d.pid, lab.hosts[1]!, '--mode', 'pre-copy', '--max-downtime', '5'),
  ) as Migrated & { precopyRounds: { leftBytes: number }[]; finalPages: number };
  assert.ok(r.precopyRounds.length >= 2, 'a round of scattered pages after the first');
  assert.ok(r.finalPages > 0, 'pages written since the last round went frozen');
  assert.match(await d.check(r.targetPid), /^CHECK ok \d+$/);
  killAndReap(r.targetPid); // the fault tests below want nothing running at the target
});

test('pre-copy of a process whose 16 threads write at random: every thread frozen and moved, every page right', async () => {
  const d = await startSelfChecking(dir(), 'dirty', ['64', '20', 'random', '16'], cleanup);
  assert.equal(readdirSync(`/proc/${d.pid}/task`).length, 17);
  const r = migrated(
    await migrateCli(lab.hosts[0]!, d.pid, lab.hosts[1]!, '--mode', 'pre-copy', '--max-downtime', '50'),
  );
  assert.equal(readdirSync(`/proc/${r.targetPid}/task`).length, 17, 'every thread came');
  const line = await d.check(r.targetPid);
  assert.match(line, /^CHECK ok \d+$/);
  await new Promise((resolve) => setTimeout(resolve, 200));
  const later = await d.check(r.targetPid);
  assert.match(later, /^CHECK ok \d+$/);
  assert.ok(Number(later.split(' ')[2]) > Number(line.split(' ')[2]), 'its threads write on there');
  killAndReap(r.targetPid); // the fault tests below want nothing running at the target
});

for (const mode of ['stop-copy', 'pre-copy']) {
  test(`${mode}: memory mapped MAP_NORESERVE or MAP_DROPPABLE, or advised, keeps it though its pages went straight into staging`, async () => {
    // Staging is plain anonymous memory: what only mmap() gives a VMA must keep it from moving
    // into place (the restore maps it so, and writes its pages).
    const f = await startConforming(dir(), 'memory', cleanup);
    const r = migrated(await migrateCli(lab.hosts[0]!, f.pid, lab.hosts[1]!, '--mode', mode));
    assert.equal(await f.check(r.targetPid), 'PASS');
    killAndReap(r.targetPid);
  });
}

test('pre-copy of memory whose VMA keeps shrinking: the pages placed in staging that cannot move into place come back from it', async () => {
  // The target puts each round's pages straight into staging, never on its disk. The writable
  // VMA's end moves between the last round and the freeze: its staging does not move into place,
  // and the restore must find those pages in the round's part all the same (given back).
  const d = await startSelfChecking(dir(), 'shrink', ['64'], cleanup);
  const r = migrated(
    await migrateCli(lab.hosts[0]!, d.pid, lab.hosts[1]!, '--mode', 'pre-copy', '--max-downtime', '100'),
  ) as Migrated & { precopyRounds: { bytes: number; prefilled: boolean }[] };
  assert.ok(r.precopyRounds[0]!.bytes >= 64 << 20, 'the first round copies the memory');
  assert.ok(
    r.precopyRounds.every((round) => round.prefilled),
    'every round was prefilled',
  );
  assert.match(await d.check(r.targetPid), /^CHECK ok \d+$/);
  killAndReap(r.targetPid); // the fault tests below want nothing running at the target
});

interface PostCopied extends Migrated {
  mode: string;
  postCopy: { pages: number; requests: number; bytes: number; ms: number };
}

test('post-copy: the process runs at the target before its memory is there, writing at random; every page right, there and back', async () => {
  const d = await startSelfChecking(dir(), 'dirty', ['128', '40', 'random'], cleanup);
  const there = migrated(
    await migrateCli(lab.hosts[0]!, d.pid, lab.hosts[1]!, '--mode', 'post-copy'),
  ) as PostCopied;
  assert.equal(there.mode, 'post-copy');
  assert.ok(there.postCopy.bytes >= 128 << 20, `${there.postCopy.bytes} bytes sent after it ran there`);
  assert.match(await d.check(there.targetPid), /^CHECK ok \d+$/);
  const back = migrated(
    await migrateCli(lab.hosts[1]!, there.targetPid, lab.hosts[0]!, '--mode', 'post-copy'),
  ) as PostCopied;
  const line = await d.check(back.targetPid);
  assert.match(line, /^CHECK ok \d+$/);
  killAndReap(back.targetPid); // the fault tests below want nothing running at the target
});

test('hybrid: one pre-copy round, then post-copy of what was written since; every page right, there and back', async () => {
  const d = await startSelfChecking(dir(), 'dirty', ['128', '40', 'random'], cleanup);
  const there = migrated(
    await migrateCli(lab.hosts[0]!, d.pid, lab.hosts[1]!, '--mode', 'hybrid'),
  ) as PostCopied & { precopyRounds: unknown[] };
  assert.equal(there.mode, 'hybrid');
  assert.equal(there.precopyRounds.length, 1);
  // Only the pages written since the round come after: fewer than all 32768 of the workload.
  assert.ok(there.postCopy.pages > 0 && there.postCopy.pages < 32768, JSON.stringify(there.postCopy));
  assert.match(await d.check(there.targetPid), /^CHECK ok \d+$/);
  const back = migrated(
    await migrateCli(lab.hosts[1]!, there.targetPid, lab.hosts[0]!, '--mode', 'hybrid'),
  ) as PostCopied;
  assert.match(await d.check(back.targetPid), /^CHECK ok \d+$/);
  killAndReap(back.targetPid); // the fault tests below want nothing running at the target
});

test('pre-copy tracked by page hashes (where userfaultfd cannot write-protect) moves the process intact', async () => {
  const d = await startSelfChecking(dir(), 'dirty', ['32', '10'], cleanup);
  const r = await migrateCli(
    lab.hosts[0]!,
    d.pid,
    lab.hosts[1]!,
    '--mode',
    'pre-copy',
    '--dirty-tracking',
    'page-hashes',
  );
  const out = migrated(r) as Migrated & { dirtyTracking: string; finalPages: number; unchangedPages: number };
  assert.equal(out.dirtyTracking, 'page-hashes');
  assert.ok(out.unchangedPages > out.finalPages, `${out.finalPages} pages sent frozen`);
  assert.match(await d.check(out.targetPid), /^CHECK ok \d+$/);
  killAndReap(out.targetPid); // the fault tests below want nothing running at the target
});

test("pre-copy tracked by the kernel's soft-dirty bits: intact where the kernel has them, else refused before anything", async () => {
  const d = await startSelfChecking(dir(), 'dirty', ['32', '10'], cleanup);
  const args = ['--mode', 'pre-copy', '--dirty-tracking', 'soft-dirty'];
  const r = await migrateCli(lab.hosts[0]!, d.pid, lab.hosts[1]!, ...args);
  if (kernelTracksSoftDirty()) {
    const out = migrated(r) as Migrated & {
      dirtyTracking: string;
      finalPages: number;
      unchangedPages: number;
    };
    assert.equal(out.dirtyTracking, 'soft-dirty');
    assert.ok(out.unchangedPages > out.finalPages, `${out.finalPages} pages sent frozen`);
    assert.match(await d.check(out.targetPid), /^CHECK ok \d+$/);
    killAndReap(out.targetPid); // the fault tests below want nothing running at the target
    return;
  }
  // This kernel has no CONFIG_MEM_SOFT_DIRTY: refused with the reason, the process never frozen.
  assert.equal(r.code, 1, r.stdout);
  const error = (JSON.parse(r.stdout) as { error: { code: string; message: string } }).error;
  assert.equal(error.code, 'FERRY_MIGRATION_FAILED');
  assert.match(error.message, /CONFIG_MEM_SOFT_DIRTY.*the process runs on here/);
  runsFree(d.pid);
  assertUntracked(d.pid);
  assert.match(await d.check(d.pid), /^CHECK ok \d+$/);
  await targetClean(agents[1]!);
});

test('pre-copy: the link cut during the rounds leaves the source running and no longer tracked', async () => {
  const code = await faultMidStream(
    () => setLink(lab.hosts[1]!, false),
    () => setLink(lab.hosts[1]!, true),
    '--mode',
    'pre-copy',
  );
  assert.equal(code, 'FERRY_MIGRATION_FAILED');
  await targetClean(agents[1]!);
});

test('a corrupted frame: the target refuses the image, the source runs on intact', async () => {
  const m = await memload(8);
  const relay = await corruptingRelay(lab.hosts[0]!, lab.hosts[1]!, 1 << 20);
  cleanup(relay.close);
  const r = await migrateCli(lab.hosts[0]!, m.pid, relay.to);
  assert.equal(r.code, 1, r.stdout);
  assert.match(r.stdout, /FERRY_MIGRATION_FAILED/);
  runsFree(m.pid);
  assert.equal(await m.check(), 'CHECK ok');
  await targetClean(agents[1]!);
});

test('over TLS: the agent presents its certificate, the source trusts it with --tls-ca', async () => {
  const host = lab.hosts[2]!;
  const [cert, key] = [`${lab.work}/cert.pem`, `${lab.work}/key.pem`];
  execFileSync(
    'openssl',
    [
      ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
      ...['-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=ferry-test'],
      ...['-addext', `subjectAltName=IP:${host.addr}`],
    ],
    { stdio: 'ignore' },
  );
  await startAgentOn(host, dir(), { port: 7443, extra: ['--tls-cert', cert, '--tls-key', key] });
  const f = await started();
  assert.match(await f.verify(), /^PASS 1 /);
  const plain = await migrateCli(lab.hosts[0]!, f.pid, `${host.addr}:7443`, '--timeout', '2000');
  assert.equal(plain.code, 1, 'plain HTTP to a TLS agent fails');
  runsFree(f.pid);
  const moved = migrated(await migrateCli(lab.hosts[0]!, f.pid, `${host.addr}:7443`, '--tls-ca', cert));
  assert.match(await f.verify(moved.targetPid), /^PASS 2 /);
});

test("the target's data directory fills up: the source runs on intact, the target cleans up; pages put straight into the process never fill it", async () => {
  const small = `${lab.work}/small`;
  mkdirSync(small);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', small]);
  cleanup(() => void execFileSync('umount', ['-l', small]));
  const agent = await startAgentOn(lab.hosts[2]!, small);
  const m = await memload(16);
  // Hybrid's round goes to the target's disk (its pages are served from there): 16 MiB in 4.
  const r = await migrateCli(lab.hosts[0]!, m.pid, lab.hosts[2]!, '--mode', 'hybrid');
  assert.equal(r.code, 1, r.stdout);
  assert.match(r.stdout, /no space left on device/);
  runsFree(m.pid);
  assert.equal(await m.check(), 'CHECK ok');
  await targetClean(agent);
  // Stop-copy's pages go straight into the process the target restores: the same process moves.
  const moved = migrated(await migrateCli(lab.hosts[0]!, m.pid, lab.hosts[2]!));
  assert.equal(await m.check(moved.targetPid), 'CHECK ok');
  killAndReap(moved.targetPid);
});

test('redis-server with 100,000 keys migrates there (pre-copy) and back (post-copy); every key reads back, writes work', async () => {
  const port = 16379;
  const [a, b] = [lab.hosts[0]!, lab.hosts[1]!];
  const pid = await startLogged(
    `${dir()}/redis.log`,
    'ip',
    ['netns', 'exec', a.ns, 'redis-server', '--port', String(port), ...REDIS_OPTIONS],
    /Ready to accept connections/,
    cleanup,
  );
  assert.match(loadKeys(a.addr, port), new RegExp(`errors: 0, replies: ${KEYS}`));
  const there = migrated(await migrateCli(a, pid, b, '--mode', 'pre-copy'));
  assert.equal(checkKeys(b.addr, port), '-1');
  assert.equal(redisCli(b.addr, port, 'SET', 'moved', 'once'), 'OK');
  await new Promise((r) => setTimeout(r, 100)); // redis closes its side of the connection
  migrated(await migrateCli(b, there.targetPid, a, '--mode', 'post-copy'));
  assert.equal(checkKeys(a.addr, port), '-1');
  assert.equal(redisCli(a.addr, port, 'GET', 'moved'), 'once');
  assert.equal(redisCli(a.addr, port, 'DBSIZE'), String(KEYS + 1));
});
