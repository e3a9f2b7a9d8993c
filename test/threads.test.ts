// Multi-threaded processes through dump and restore: every thread comes back with its own state,
// and the fixture checks from inside that thread-to-thread references (glibc's copies of the thread
// IDs, pthread_join's tid futexes, a condition variable) still work.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { before, test } from 'node:test';
import { SIG, tgkill } from '../src/sys/signal.js';
import { cleanupAfterAll, workDirs } from './helpers/cleanup.js';
import { cliOk, restoreCli } from './helpers/cli.js';
import { fileContent } from './helpers/compute.js';
import { fixture } from './helpers/fixtures.js';
import { startLogged } from './helpers/processes.js';
import { becomeSubreaper } from './helpers/reaper.js';

const WORKERS = 3;
const cleanup = cleanupAfterAll();
const { dir } = workDirs('ferry-threads', cleanup);

before(() => becomeSubreaper());

interface Threaded {
  pid: number;
  /** Its output file, which a restored copy goes on writing. */
  out: string;
}

/** Start the fixture with its output in a file; wait until it has ticked a few times. */
async function startThreaded(): Promise<Threaded> {
  const out = `${dir()}/out`;
  return { pid: await startLogged(out, fixture('threads'), [String(WORKERS)], /^tick 3 /m, cleanup), out };
}

const cli = cliOk;
const restored = (image: string, ...extra: string[]): Promise<number> => restoreCli(image, cleanup, ...extra);

function tids(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`)
    .map(Number)
    .sort((a, b) => a - b);
}

/** The last "tick <n> <sum>" line: the workers' counters summed. */
function lastSum(out: string): number {
  const ticks = [...readFileSync(out, 'utf8').matchAll(/^tick \d+ (\d+)$/gm)];
  return Number(ticks.at(-1)?.[1] ?? -1);
}

/** Wait until the workers have counted well past `sum` (they stop on a broken restore). */
async function countsOn(out: string, sum: number): Promise<void> {
  for (const until = Date.now() + 10_000; lastSum(out) < sum + 20; await sleep(20))
    assert.ok(Date.now() < until, `the workers stopped counting at ${lastSum(out)}`);
}

/** Ask the fixture to check itself, join its workers and exit; returns its verdict line. */
async function finish(pid: number, out: string): Promise<string> {
  process.kill(pid, 'SIGUSR1');
  return (await fileContent(out, /^DONE .*\n/m)).match(/^DONE .*$/m)![0];
}

test('a multi-threaded process restores with every thread, under the same thread IDs', async () => {
  const p = await startThreaded();
  const before = tids(p.pid);
  assert.equal(before.length, WORKERS + 1);
  const image = dir();
  await cli(['dump', String(p.pid), '-D', image]);
  const shown = JSON.parse(await cli(['show', image, '--json'])) as {
    manifest: { state: { threads: { tid: number; name: string }[] } };
  };
  assert.deepEqual(
    shown.manifest.state.threads.map((t) => [t.tid, t.name]),
    before.map((tid, i) => [tid, i === 0 ? basename(fixture('threads')).slice(0, 15) : `worker-${i - 1}`]),
  );
  const sum = lastSum(p.out);
  const pid = await restored(image, '--same-pid', 'require');
  assert.equal(pid, p.pid);
  assert.deepEqual(tids(pid), before);
  await countsOn(p.out, sum);
  assert.match(await finish(pid, p.out), /^DONE ok \d+$/);
});

test('under a new PID, every thread gets a new ID and glibc finds its threads by them', async () => {
  const p = await startThreaded();
  const image = dir();
  await cli(['dump', String(p.pid), '-D', image]);
  const pid = await restored(image, '--same-pid', 'no');
  assert.notEqual(pid, p.pid);
  assert.equal(tids(pid).length, WORKERS + 1);
  assert.match(await finish(pid, p.out), /^DONE ok \d+$/);
});

test('--leave-running five times in a row on a multi-threaded process leaves it intact', async () => {
  const p = await startThreaded();
  for (let i = 0; i < 5; i++) await cli(['dump', String(p.pid), '-D', dir(), '--leave-running']);
  await countsOn(p.out, lastSum(p.out));
  assert.match(await finish(p.pid, p.out), /^DONE ok \d+$/);
});

/** A thread's pending signals (SigPnd), and its process's (ShdPnd). */
function pendingOf(pid: number, tid: number): { thread: bigint; process: bigint } {
  const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'latin1');
  const mask = (name: string): bigint =>
    BigInt(`0x${new RegExp(`^${name}:\\s+([0-9a-f]+)`, 'm').exec(status)![1]}`);
  return { thread: mask('SigPnd'), process: mask('ShdPnd') };
}

test('a signal pending on one thread (blocked there) is pending on that thread after restore', async () => {
  const p = await startThreaded();
  tgkill(p.pid, tids(p.pid)[1]!, SIG.SIGUSR1); // the workers block SIGUSR1: it stays pending on that thread
  const image = dir();
  await cli(['dump', String(p.pid), '-D', image]);
  const pid = await restored(image, '--same-pid', 'no');
  const usr1 = 1n << BigInt(SIG.SIGUSR1 - 1);
  assert.deepEqual(
    tids(pid).map((tid) => pendingOf(pid, tid)),
    tids(pid).map((_, i) => ({ thread: i === 1 ? usr1 : 0n, process: 0n })),
  );
  await countsOn(p.out, lastSum(p.out));
  assert.match(await finish(pid, p.out), /^DONE ok \d+$/);
});
