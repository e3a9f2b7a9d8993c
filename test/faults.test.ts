// ferry dies while it works inside a process: the process runs on untouched. FERRY_FAULT makes the
// ferry command kill itself at the n-th ptrace resume of a thread it works in, for every n a dump
// has; the same process goes through all of them and checks itself all along (registers, vector
// registers, signal mask, sleeps restarted right).
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { before, test } from 'node:test';
import { cleanupAfterAll, workDirs } from './helpers/cleanup.js';
import { runCli } from './helpers/cli.js';
import { fixture } from './helpers/fixtures.js';
import { startLogged, traceState } from './helpers/processes.js';
import { becomeSubreaper, childrenOf, killAndReap } from './helpers/reaper.js';
import { waitpid, WNOHANG } from '../src/sys/wait.js';
import { kill, SIG } from '../src/sys/signal.js';
import { PYTHON } from './helpers/paths.js';

const cleanup = cleanupAfterAll();
const { dir } = workDirs('ferry-faults', cleanup);

before(() => becomeSubreaper());

interface Steady {
  pid: number;
  /** Its output so far. */
  lines(): string[];
}

/** PIDs of the fixtures this file started. */
const fixtures: number[] = [];

/** The fixture, its output in a file (a descriptor of the test's would stop a dump). */
async function steady(): Promise<Steady> {
  const out = `${dir()}/out`;
  const pid = await startLogged(out, fixture('steady'), [], /^tick 1 /m, cleanup);
  fixtures.push(pid);
  return {
    pid,
    lines: () =>
      readFileSync(out, 'latin1')
        .split('\n')
        .filter((l) => l !== ''),
  };
}

const mappings = (pid: number): string[] =>
  readFileSync(`/proc/${pid}/maps`, 'latin1')
    .trim()
    .split('\n')
    .map((l) => l.split(/\s+/).slice(0, 2).join(' '));

/** The process is free (not traced, not stopped), ticks on, and has reported no failure. */
async function assertRunsOn(p: Steady, what: string): Promise<void> {
  for (let i = 0; i < 100 && traceState(p.pid).tracerPid !== 0; i++) await sleep(10);
  const { state, tracerPid } = traceState(p.pid);
  assert.equal(tracerPid, 0, `${what}: still traced`);
  assert.ok(state !== 't' && state !== 'T', `${what}: state ${state}`);
  const ticks = p.lines().length;
  for (let i = 0; i < 100 && p.lines().length < ticks + 2; i++) await sleep(10);
  assert.ok(p.lines().length >= ticks + 2, `${what}: it does not tick on`);
  const failed = p.lines().find((l) => l.startsWith('FAILED'));
  assert.equal(failed, undefined, `${what}: ${failed}`);
}

test('ferry SIGKILLed at any ptrace resume of a dump: the process runs on untouched', async () => {
  const p = await steady();
  const before = mappings(p.pid);
  let kills = 0;
  for (let n = 1; ; n++) {
    const r = await runCli(['dump', String(p.pid), '-D', dir(), '--leave-running'], {
      env: { FERRY_FAULT: `resume@${n}` },
    });
    if (r.code === 0) break; // the dump has fewer resumes than n
    assert.equal(r.signal, 'SIGKILL', `resume ${n}: ${r.stdout}${r.stderr}`);
    kills++;
    await assertRunsOn(p, `killed at resume ${n}`);
    assert.deepEqual(mappings(p.pid), before, `killed at resume ${n}: its mappings changed`);
  }
  assert.ok(kills >= 10, `only ${kills} resumes in a dump`);
  console.log(`killed at each of ${kills} resumes`);
  await assertRunsOn(p, 'after a whole dump');
});

test('ferry SIGKILLed as soon as the process is frozen: it runs on', async () => {
  const p = await steady();
  const r = await runCli(['dump', String(p.pid), '-D', dir()], { env: { FERRY_FAULT: 'frozen' } });
  assert.equal(r.signal, 'SIGKILL', r.stderr);
  await assertRunsOn(p, 'killed once frozen');
});

/** Children of this test process (a subreaper: orphans come to it) other than `known`, once reaped. */
function strayChildren(known: number[]): number[] {
  return childrenOf(process.pid).filter((pid) => {
    if (known.includes(pid)) return false;
    try {
      return waitpid(pid, WNOHANG) === null; // a zombie is reaped and gone
    } catch {
      return false;
    }
  });
}

test('ferry SIGKILLed at any ptrace resume of a restore: nothing it made survives it', async () => {
  const p = await steady();
  const image = dir();
  assert.equal((await runCli(['dump', String(p.pid), '-D', image, '--leave-running'])).code, 0);
  let kills = 0;
  for (let n = 1; ; n++) {
    const r = await runCli(['restore', '-D', image, '--same-pid', 'no'], {
      env: { FERRY_FAULT: `resume@${n}` },
    });
    if (r.code === 0) {
      cleanup(() => killAndReap(Number(r.stdout.trim())));
      break;
    }
    assert.equal(r.signal, 'SIGKILL', `resume ${n}: ${r.stdout}${r.stderr}`);
    kills++;
    let strays = strayChildren(fixtures);
    for (let i = 0; i < 100 && strays.length > 0; i++) {
      await sleep(10);
      strays = strayChildren(fixtures);
    }
    assert.deepEqual(strays, [], `killed at resume ${n}: processes it made live on`);
  }
  assert.ok(kills >= 10, `only ${kills} resumes in a restore`);
  await assertRunsOn(p, 'the original, all along');
});

test('a dump stopped by SIGINT, SIGTERM or SIGKILL leaves no image', async () => {
  const p = await steady();
  for (const signal of ['INT', 'TERM']) {
    const image = `${dir()}/image`;
    const r = await runCli(['dump', String(p.pid), '-D', image], {
      env: { FERRY_FAULT: `frozen:${signal}` },
    });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, new RegExp(`interrupted by SIG${signal}: no image was written`));
    assert.ok(!existsSync(image), 'the image directory it made is gone');
    await assertRunsOn(p, `interrupted by SIG${signal}`);
  }
  const image = dir();
  const killed = await runCli(['dump', String(p.pid), '-D', image], { env: { FERRY_FAULT: 'frozen' } });
  assert.equal(killed.signal, 'SIGKILL');
  // Its guardian removes the image it had begun (a moment after: it hears ferry die).
  for (let i = 0; i < 200 && readdirSync(image).length > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(readdirSync(image), []);
  assert.match(killed.stderr, /removed the image ferry had begun in .*\.ferry-partial-/);
  assert.equal((await runCli(['dump', String(p.pid), '-D', image, '--leave-running'])).code, 0);
  assert.deepEqual(readdirSync(image).sort(), ['manifest.json', 'pagemap.img', 'pages.img']);
  await assertRunsOn(p, 'after the dumps');
});

test('a restore under the original PID does not move the PID counter back', async () => {
  const p = await steady();
  const image = dir();
  assert.equal((await runCli(['dump', String(p.pid), '-D', image])).code, 0);
  killAndReap(p.pid); // killed by the dump: reaped here, its PID is free
  const counter = (): number => Number(readFileSync('/proc/sys/kernel/ns_last_pid', 'latin1'));
  const before = counter();
  assert.ok(before > p.pid, 'PIDs were given out since the fixture started');
  const r = await runCli(['restore', '-D', image, '--same-pid', 'require']);
  assert.equal(r.code, 0, r.stderr);
  cleanup(() => killAndReap(p.pid));
  assert.equal(Number(r.stdout.trim()), p.pid);
  assert.ok(counter() >= before, `ns_last_pid went from ${before} back to ${counter()}`);
});

const stateOf = (pid: number): string => traceState(pid).state;

test('a stopped process, alone or in a tree, is dumped and restored stopped, and carries on when continued', async () => {
  const p = await steady();
  kill(p.pid, SIG.SIGSTOP);
  for (let i = 0; i < 100 && stateOf(p.pid) !== 'T'; i++) await sleep(5);
  const kept = await runCli(['dump', String(p.pid), '-D', dir(), '--leave-running']);
  assert.equal(kept.code, 0, kept.stderr);
  assert.deepEqual(traceState(p.pid), { state: 'T', tracerPid: 0 }, 'left stopped, and free');
  const image = dir();
  assert.equal((await runCli(['dump', String(p.pid), '-D', image])).code, 0);
  killAndReap(p.pid);
  const restored = await runCli(['restore', '-D', image, '--same-pid', 'require']);
  assert.equal(restored.code, 0, restored.stderr);
  cleanup(() => killAndReap(p.pid));
  for (let i = 0; i < 100 && stateOf(p.pid) !== 'T'; i++) await sleep(5);
  assert.deepEqual(traceState(p.pid), { state: 'T', tracerPid: 0 }, 'restored stopped');
  kill(p.pid, SIG.SIGCONT);
  await assertRunsOn(p, 'continued after its restore');

  // A parent that runs, with a stopped child: the tree comes back so.
  const home = dir();
  const script =
    `import subprocess, time\n` +
    `c = subprocess.Popen([${JSON.stringify(fixture('steady'))}], stdout=open('${home}/child', 'w'))\n` +
    `print(c.pid, flush=True)\nwhile True: time.sleep(0.05)`;
  const parent = await startLogged(`${home}/parent`, PYTHON, ['-c', script], /^\d+$/m, cleanup);
  const c: Steady = {
    pid: Number(readFileSync(`${home}/parent`, 'latin1').trim()),
    lines: () =>
      readFileSync(`${home}/child`, 'latin1')
        .split('\n')
        .filter((l) => l !== ''),
  };
  for (let i = 0; i < 200 && c.lines().length < 2; i++) await sleep(10);
  kill(c.pid, SIG.SIGSTOP);
  for (let i = 0; i < 100 && stateOf(c.pid) !== 'T'; i++) await sleep(5);
  assert.equal(stateOf(c.pid), 'T', 'the child is stopped before the dump');
  const tree = dir();
  const dumped = await runCli(['dump', String(parent), '-D', tree]);
  assert.equal(dumped.code, 0, dumped.stderr);
  killAndReap(c.pid);
  killAndReap(parent);
  const back = await runCli(['restore', '-D', tree, '--same-pid', 'require']);
  assert.equal(back.code, 0, back.stderr);
  cleanup(() => killAndReap(c.pid)); // after its parent: this process reaps it then
  cleanup(() => killAndReap(parent));
  for (let i = 0; i < 100 && stateOf(c.pid) !== 'T'; i++) await sleep(5);
  assert.equal(stateOf(c.pid), 'T', 'the child is stopped again');
  assert.notEqual(stateOf(parent), 'T', 'its parent runs');
  kill(c.pid, SIG.SIGCONT);
  await assertRunsOn(c, 'the child, continued');
});
