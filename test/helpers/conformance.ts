// A conformance fixture (test/fixtures/conformance/) running: it set up its kind of state and
// checks it on SIGUSR1, wherever it was moved.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { fixture } from './fixtures.js';
import { killAndReap, treeOf } from './reaper.js';
import { reportLines, waitForLines } from './report.js';

export interface Conforming {
  pid: number;
  report: string;
  work: string;
  /** SIGUSR1 to `pid` (the fixture or its restored copy); its verdict line. */
  check(pid?: number): Promise<string>;
}

/** Start conformance fixture `name`, its report and work files in directory `work`. */
export async function startConforming(
  work: string,
  name: string,
  cleanup: (step: () => Promise<void> | void) => void,
): Promise<Conforming> {
  const report = `${work}/report`;
  // Its complaints go to a file: a descriptor of the test runner's could not be checkpointed.
  const stderr = openSync(`${work}/stderr`, 'w');
  const child = spawn(fixture(`conformance/${name}`), [report, work], {
    stdio: ['ignore', 'ignore', stderr],
  });
  closeSync(stderr);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  cleanup(async () => {
    const descendants = treeOf(child.pid!).slice(1);
    child.kill('SIGKILL');
    await exited;
    descendants.forEach(killAndReap); // orphaned to this process (a subreaper)
  });
  const [ready] = await waitForLines(report, 1);
  const pid = Number(/^READY (\d+)$/.exec(ready!)?.[1]);
  assert.equal(pid, child.pid, ready);
  return {
    pid,
    report,
    work,
    async check(at = pid) {
      const seen = reportLines(report).length;
      process.kill(at, 'SIGUSR1');
      return (await waitForLines(report, seen + 1)).at(-1)!;
    },
  };
}
