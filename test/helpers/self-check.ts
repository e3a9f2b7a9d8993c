// C fixtures that check their own memory on SIGUSR1 and report "CHECK ok ..." or "CHECK bad ..."
// through a file (memload, dirty), started with a handle Node reaps; and whether a process is still
// under ferry's dirty tracking.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { fixture } from './fixtures.js';
import { reportLines, waitForLines } from './report.js';

export interface SelfChecking {
  pid: number;
  /** Its report file (stdout). */
  out: string;
  child: ChildProcess;
  exited: Promise<void>;
  /** Signal `at` (the fixture, or its restored copy) and read its verdict. */
  check(at?: number): Promise<string>;
}

/** Start fixture `name` with `args`, its report in `home`/out; `cleanup` kills and reaps it. */
export async function startSelfChecking(
  home: string,
  name: 'memload' | 'dirty' | 'lazy' | 'shrink',
  args: string[],
  cleanup: (step: () => Promise<void>) => void,
): Promise<SelfChecking> {
  const out = `${home}/out`;
  const fd = openSync(out, 'w');
  const child = spawn(fixture(name), args, { stdio: ['ignore', fd, 'ignore'] });
  closeSync(fd);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  cleanup(async () => {
    child.kill('SIGKILL');
    await exited; // reaped by Node, whose handle on it ends only so
  });
  await waitForLines(out, 1);
  return {
    pid: child.pid!,
    out,
    child,
    exited,
    async check(at = child.pid!) {
      const before = reportLines(out).length;
      process.kill(at, 'SIGUSR1');
      return (await waitForLines(out, before + 1)).at(-1)!;
    },
  };
}

/** No VMA of the process is registered with a userfaultfd any more (smaps VmFlags "uw"). */
export function assertUntracked(pid: number): void {
  const flags = readFileSync(`/proc/${pid}/smaps`, 'utf8').match(/^VmFlags:.*$/gm) ?? [];
  assert.ok(flags.length > 0 && flags.every((f) => !/ uw\b/.test(f)), `process ${pid} is still tracked`);
}
