// Freezing and releasing real processes. Every freeze is released in the same synchronous turn: the
// fixtures are children of this Node process, and libuv's SIGCHLD handler must not see their
// ptrace stops.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { after, test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import { NR } from '../../src/sys/nr.js';
import { RemoteSyscalls } from '../../src/tracee/remote.js';
import { Tracee } from '../../src/tracee/tracee.js';
import { fixture } from '../helpers/fixtures.js';
import { kernelThread, startProcess, traceState, type Started } from '../helpers/processes.js';

const started: Started[] = [];
after(async () => {
  for (const p of started) await p.stop();
});

async function ticker(threads: number): Promise<Started> {
  const p = await startProcess(fixture('ticker'), [String(threads)]);
  started.push(p);
  return p;
}

const taskStates = (pid: number): { state: string; tracerPid: number }[] =>
  readdirSync(`/proc/${pid}/task`).map((tid) => traceState(Number(tid)));

const waitForTicks = async (p: Started, count: number): Promise<void> => {
  const target = p.lines.length + count;
  for (let i = 0; i < 200 && p.lines.length < target; i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(p.lines.length >= target, 'the process prints again');
};

test('freezes every thread, runs a remote syscall, releases them all', async () => {
  const p = await ticker(5);
  assert.equal(p.readyLine, 'READY 6');
  const tracee = Tracee.freeze(p.pid);
  let frozen: { state: string; tracerPid: number }[];
  let remotePid: bigint;
  try {
    assert.equal(tracee.tids.length, 6);
    assert.equal(tracee.tids[0], p.pid);
    frozen = taskStates(p.pid);
    const remote = RemoteSyscalls.open(tracee);
    remotePid = remote.call(NR.getpid);
    remote.close();
  } finally {
    tracee.release();
  }
  assert.equal(remotePid, BigInt(p.pid));
  assert.ok(
    frozen.every((t) => t.state === 't' && t.tracerPid === process.pid),
    JSON.stringify(frozen),
  );
  const released = taskStates(p.pid);
  assert.ok(
    released.every((t) => t.state !== 't' && t.tracerPid === 0),
    JSON.stringify(released),
  );
  await waitForTicks(p, 3);
  const [, tick, sum] = p.lines.at(-1)!.split(' ');
  assert.ok(Number(tick) > 0 && Number(sum) > 0);
});

test('a process frozen in a sleeping syscall restarts it and carries on, many times over', async () => {
  const p = await ticker(1);
  for (let i = 0; i < 20; i++) {
    const tracee = Tracee.freeze(p.pid);
    try {
      const remote = RemoteSyscalls.open(tracee);
      remote.installScratch({ size: 1 << 16 });
      const [brk, pid] = remote.batch([
        { name: 'brk', nr: NR.brk, args: [0] },
        { name: 'getpid', nr: NR.getpid, args: [] },
      ]);
      assert.equal(pid, BigInt(p.pid));
      assert.ok(brk! > 0n);
      remote.removeScratch();
      remote.close();
    } finally {
      tracee.release();
    }
  }
  await waitForTicks(p, 5);
  assert.ok(!p.lines.some((l) => l.startsWith('FAILED')), p.lines.join('\n'));
  const ticks = p.lines.slice(1).map((l) => Number(l.split(' ')[1]));
  assert.deepEqual(
    ticks,
    ticks.map((_, i) => i),
    'no tick lost or repeated',
  );
});

test('refuses what it cannot freeze, leaving nothing traced', () => {
  assert.throws(
    () => Tracee.freeze(4194305),
    (err: unknown) => isFerryError(err, 'FERRY_NO_SUCH_PROCESS'),
  );
  const kthread = kernelThread();
  if (kthread !== undefined)
    assert.throws(
      () => Tracee.freeze(kthread),
      (err: unknown) => isFerryError(err, 'FERRY_PERMISSION') && err.message.includes('kernel thread'),
    );
});
