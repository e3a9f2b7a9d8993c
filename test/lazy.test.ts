// Lazy restore (ferry restore --lazy): the process runs before its memory is in, and whatever it
// does to that memory meanwhile (fork, mremap, madvise, the kernel writing into a page for it)
// finds every page as it was; should ferry die before all are in, the process dies with it and the
// image restores again.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { before, test } from 'node:test';
import { cleanupAfterAll, workDirs } from './helpers/cleanup.js';
import { cliOk, restoreCli, runCli } from './helpers/cli.js';
import { processState, startProcess } from './helpers/processes.js';
import { becomeSubreaper, childrenOf, killAndReap, reapOrphans } from './helpers/reaper.js';
import { waitForLines } from './helpers/report.js';
import { startSelfChecking } from './helpers/self-check.js';

const cleanup = cleanupAfterAll();
const { dir } = workDirs('ferry-lazy', cleanup);

before(() => becomeSubreaper());

async function until(what: string, ok: () => boolean, timeoutMs = 10_000): Promise<void> {
  for (const end = Date.now() + timeoutMs; !ok(); await new Promise((r) => setTimeout(r, 10)))
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
}

/** A started `lazy` fixture (three regions of `mib`), dumped and killed: its image and report file. */
async function dumped(mib: number): Promise<{ image: string; out: string }> {
  const m = await startSelfChecking(dir(), 'lazy', [String(mib)], cleanup);
  const image = dir();
  await cliOk(['dump', String(m.pid), '-D', image]);
  await m.exited;
  return { image, out: m.out };
}

/** `ferry restore --lazy` with `fault` injected; its PID and the restored PID (once written). */
async function lazyRestore(image: string, fault: string) {
  const pidfile = `${image}.pid`;
  let ferry = 0;
  const result = runCli(['restore', '-D', image, '--lazy', '--json', '--pidfile', pidfile, '--tty', 'null'], {
    env: { FERRY_FAULT: fault },
    onStart: (pid) => (ferry = pid),
  });
  await until('the restored PID', () => existsSync(pidfile) && readFileSync(pidfile, 'utf8').endsWith('\n'));
  const pid = Number(readFileSync(pidfile, 'utf8'));
  cleanup(() => killAndReap(pid));
  return { ferry, pid, result };
}

test('a lazily restored process forks, moves, drops and reads into memory still coming in: every page right', async () => {
  const { image, out } = await dumped(64);
  // ferry stops itself after the first chunk of the background copy: what the process does next, it
  // does with almost all of its memory still missing.
  const { ferry, pid, result } = await lazyRestore(image, 'lazy:STOP');
  await until('ferry to stop', () => processState(ferry) === 'T');
  process.kill(pid, 'SIGUSR1');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(
    readFileSync(out, 'utf8').split('\n').filter(Boolean).length,
    1,
    'no check before its pages come',
  );
  process.kill(ferry, 'SIGCONT');
  const r = await result;
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout) as {
    pid: number;
    lazy: { pages: number; faults: number; zeroFaults: number; forks: number; filledPages: number };
  };
  assert.equal(report.pid, pid);
  assert.equal(report.lazy.forks, 1);
  assert.ok(report.lazy.faults > 0 && report.lazy.zeroFaults > 0, JSON.stringify(report.lazy));
  assert.equal((await waitForLines(out, 2)).at(-1), 'CHECK ok');
  // ferry has gone: the process runs on (it no longer dies with it), nothing of ferry's left in it.
  await new Promise((r) => setTimeout(r, 100));
  assert.notEqual(processState(pid), undefined);
  assert.notEqual(processState(pid), 'Z');
  const smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  assert.ok(!/^VmFlags:.* um\b/m.test(smaps), 'a VMA is still registered for missing pages');
  assert.ok(
    readdirSync(`/proc/${pid}/fd`).every(
      (fd) => !readlinkSync(`/proc/${pid}/fd/${fd}`).includes('userfaultfd'),
    ),
  );
});

test('ferry killed while pages are still coming in: the process dies with it, and the image restores again', async () => {
  const { image, out } = await dumped(16);
  const { pid, result } = await lazyRestore(image, 'lazy:KILL');
  const r = await result;
  assert.equal(r.signal, 'SIGKILL');
  // Killed with ferry (its death signal), never left running on pages it does not have.
  await until('the half-restored process to die', () => [undefined, 'Z'].includes(processState(pid)));
  killAndReap(pid);
  const again = await restoreCli(image, cleanup, '--tty', 'null');
  process.kill(again, 'SIGUSR1');
  assert.equal((await waitForLines(out, 2)).at(-1), 'CHECK ok');
});

test('a process stopped while its pages come in is still stopped, and alive, once they are in', async () => {
  const { image, out } = await dumped(16);
  const { ferry, pid, result } = await lazyRestore(image, 'lazy:STOP');
  await until('ferry to stop', () => processState(ferry) === 'T');
  process.kill(pid, 'SIGSTOP');
  process.kill(ferry, 'SIGCONT');
  assert.equal((await result).code, 0);
  await new Promise((r) => setTimeout(r, 100)); // ferry gone: a death signal left would have fired
  assert.equal(processState(pid), 'T');
  process.kill(pid, 'SIGCONT');
  process.kill(pid, 'SIGUSR1');
  assert.equal((await waitForLines(out, 2)).at(-1), 'CHECK ok');
});

test('--lazy with --stopped is refused before anything runs', async () => {
  const { image } = await dumped(4);
  const r = await runCli(['restore', '-D', image, '--lazy', '--stopped']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--lazy does not go with --stopped/);
});

test('--lazy is refused, before anything runs, for a tree of processes', async () => {
  const tree = await startProcess('sh', ['-c', 'sleep 600 & echo READY; wait']);
  cleanup(() => tree.stop());
  const children = childrenOf(tree.pid);
  const image = dir();
  await cliOk(['dump', String(tree.pid), '-D', image]);
  await reapOrphans([tree.pid, ...children]);
  const r = await runCli(['restore', '-D', image, '--lazy']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /tree of 2 processes: restoring a tree stopped or lazily.* is not supported yet/);
});
