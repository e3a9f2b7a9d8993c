// `ferry demo`: a small counting process of ferry's own (no compiler needed) is checkpointed,
// killed, restored, and watched to carry on counting from where it stopped.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dump, type DumpResult } from './checkpoint.js';
import { restore, type RestoreResult } from './restore.js';
import { spawnProgram } from './stub/stub.js';
import { isErrno } from './sys/errno.js';
import { kill, SIG } from './sys/signal.js';
import { sleepMs } from './sys/time.js';
import { waitpid } from './sys/wait.js';

// The workload: a counter on its stack, written to fd 3 with pwrite every 50 ms.
//   sub rsp, 32; counter = 0; timespec = {0 s, 50 ms}
//   loop: counter++; pwrite64(3, &counter, 8, 0); nanosleep(&timespec, NULL); jmp loop
const WORKLOAD = Buffer.from(
  '4883ec2048c704240000000048c74424080000000048c744241080f0fa024883042401b812000000bf030000004889e6' +
    'ba080000004531d20f05b823000000488d7c240831f60f05ebd4',
  'hex',
);

const O_RDWR = 2;
const O_CREAT = 0o100;
const O_TRUNC = 0o1000;
/** Let it count this far before the checkpoint. */
const COUNT_BEFORE = 10;
const WATCH_MS = 500;

export interface DemoResult {
  workloadPid: number;
  /** Counter values seen before the checkpoint, and after the restore. */
  before: number[];
  after: number[];
  /** The counter when the process was killed. */
  stoppedAt: number;
  dump: DumpResult;
  restore: RestoreResult;
  /** The restored process counted on from where it stopped. */
  passed: boolean;
}

function readCounter(file: string): number {
  const bytes = readFileSync(file);
  return bytes.length >= 8 ? Number(bytes.readBigUInt64LE(0)) : 0;
}

/** Watch the counter for `ms`, noting each new value. */
function watch(file: string, ms: number, until?: (value: number) => boolean): number[] {
  const seen: number[] = [];
  for (const end = Date.now() + ms; Date.now() < end; sleepMs(10)) {
    const value = readCounter(file);
    if (value !== seen.at(-1)) seen.push(value);
    if (until?.(value)) break;
  }
  return seen;
}

/** Reap our child `pid` unless it has been already (the dump that killed it, as its tracer, did). */
function reap(pid: number): void {
  try {
    waitpid(pid, 0);
  } catch (err) {
    if (!isErrno(err, 'ECHILD')) throw err;
  }
}

function stop(pid: number): void {
  try {
    kill(pid, SIG.SIGKILL);
  } catch (err) {
    if (!isErrno(err, 'ESRCH')) throw err;
  }
  reap(pid);
}

/** Run the demo; `say` hears what happens, step by step. */
export async function demo(say: (line: string) => void = () => {}): Promise<DemoResult> {
  const dir = mkdtempSync(`${tmpdir()}/ferry-demo-`);
  const counter = `${dir}/counter`;
  const workloadPid = spawnProgram('ferry-demo', WORKLOAD, [
    { kind: 'open', fd: 0, path: '/dev/null', flags: O_RDWR },
    { kind: 'open', fd: 3, path: counter, flags: O_RDWR | O_CREAT | O_TRUNC, mode: 0o644 },
  ]);
  let restored: number | undefined;
  try {
    const before = watch(counter, 5000, (v) => v >= COUNT_BEFORE);
    say(`started workload ${workloadPid}, counting in ${counter}: ${before.join(' ')}`);
    const dumped = await dump(workloadPid, { dir: `${dir}/image` });
    // The workload was our child: reap it, so that its PID is free for the restore.
    reap(workloadPid);
    const stoppedAt = readCounter(counter);
    say(
      `checkpointed it (frozen ${dumped.frozenMs.toFixed(1)} ms, ${dumped.pages} pages) and killed it at ${stoppedAt}`,
    );
    const back = await restore(`${dir}/image`);
    restored = back.pid;
    const same = back.pid === workloadPid ? 'the same PID' : `a new PID (it was ${workloadPid})`;
    say(`restored it as ${back.pid}, ${same}, in ${back.restoreMs.toFixed(1)} ms`);
    const after = watch(counter, WATCH_MS).filter((v) => v !== stoppedAt);
    say(`after the restore it counts on: ${after.join(' ')}`);
    const passed =
      after.length >= 2 &&
      after[0]! > stoppedAt &&
      after[0]! <= stoppedAt + 2 &&
      after.every((v, i) => i === 0 || v > after[i - 1]!);
    say(
      passed
        ? `it carried on from ${stoppedAt}: the demo passed`
        : `it did not carry on from ${stoppedAt}: the demo failed`,
    );
    return { workloadPid, before, after, stoppedAt, dump: dumped, restore: back, passed };
  } finally {
    stop(restored ?? workloadPid);
    rmSync(dir, { recursive: true, force: true });
  }
}
