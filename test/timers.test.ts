// Timers through dump and restore: an interval timer, POSIX timers (a periodic one with a signal
// value, a one-shot SIGEV_NONE one), a timerfd and a signalfd. The fixture counts what each
// delivers and checks the rest itself.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { cleanupAfterAll, workDirs } from './helpers/cleanup.js';
import { cliOk, restoreCli } from './helpers/cli.js';
import { fileContent } from './helpers/compute.js';
import { fixture } from './helpers/fixtures.js';
import { startLogged } from './helpers/processes.js';
import { becomeSubreaper } from './helpers/reaper.js';

const cleanup = cleanupAfterAll();
const { dir } = workDirs('ferry-timers', cleanup);
/** glibc's SIGRTMIN (the kernel's 32 and 33 are its own). */
const SIGRTMIN = 34;

before(() => becomeSubreaper());

/** The last "tick <expirations> <alarms> <timer signals> <rt signals>" line. */
function lastTick(out: string): number[] {
  const ticks = [...readFileSync(out, 'utf8').matchAll(/^tick (\d+) (\d+) (\d+) (\d+)$/gm)];
  return ticks.at(-1)?.slice(1).map(Number) ?? [0, 0, 0, 0];
}

async function until(what: string, check: () => boolean): Promise<void> {
  for (const end = Date.now() + 15_000; !check(); await sleep(20))
    assert.ok(Date.now() < end, `timed out waiting until ${what}`);
}

test('interval, POSIX and fd timers and a signalfd go on after restore, with their IDs, values and periods', async () => {
  const out = `${dir()}/out`;
  const pid = await startLogged(out, fixture('timers'), [], /^tick /m, cleanup);
  const image = dir();
  await cliOk(['dump', String(pid), '-D', image]);
  const { manifest } = JSON.parse(await cliOk(['show', image, '--json'])) as {
    manifest: {
      state: { timers: { itimers: { which: number }[]; posix: { id: number; notify: string }[] } };
    };
  };
  assert.deepEqual(
    manifest.state.timers.itimers.map((t) => t.which),
    [0],
  );
  assert.deepEqual(
    manifest.state.timers.posix.map((t) => t.notify),
    ['signal', 'none'],
  );
  const shown = await cliOk(['show', image]);
  assert.match(shown, /timerfd \(clock 1\) (next in [\d.]+ ms|expired), every 10 ms/);
  assert.match(shown, /signalfd for SIGRTMIN|signalfd for SIG34|signalfd for SIGRT/);
  const [expirations, alarms, timerSignals] = lastTick(out);
  const restored = await restoreCli(image, cleanup);
  await until('every timer fired again', () => {
    const [e, a, t] = lastTick(out);
    return e! > expirations! + 30 && a! > alarms! + 5 && t! > timerSignals! + 10;
  });
  process.kill(restored, SIGRTMIN);
  await until('the signalfd took SIGRTMIN', () => lastTick(out)[3] === 1);
  process.kill(restored, 'SIGUSR1');
  assert.match(await fileContent(out, /^CHECK .*\n/m), /^CHECK ok$/m);
});
