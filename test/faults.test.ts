// ferry dies while it works inside a process: the process runs on untouched. FERRY_FAULT makes the
// ferry command kill itself at the n-th ptrace resume of a thread it works in, for every n a dump
// has; the same process goes through all of them and checks itself all along (registers, vector
// registers, signal mask, sleeps restarted right).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { before, test } from 'node:test';
import { cleanupAfterAll, workDirs } from './helpers/cleanup.js';
import { runCli } from './helpers/cli.js';
import { fixture } from './helpers/fixtures.js';
import { startLogged, traceState } from './helpers/processes.js';
import { becomeSubreaper } from './helpers/reaper.js';

const cleanup = cleanupAfterAll();
const { dir } = workDirs('ferry-faults', cleanup);

before(() => becomeSubreaper());

interface Steady {
  pid: number;
  /** Its output so far. */
  lines(): string[];
}

/** The fixture, its output in a file (a descriptor of the test's would stop a dump). */
async function steady(): Promise<Steady> {
  const out = `${dir()}/out`;
  const pid = await startLogged(out, fixture('steady'), [], /^tick 1 /m, cleanup);
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
