// wait4(2) with __WALL, its status decoded into what happened to the child or tracee.
import { syscall } from './call.js';

import { NR } from './nr.js';

export const WNOHANG = 1;
export const WALL = 0x40000000;

export type WaitStatus =
  | { pid: number; kind: 'exited'; code: number }
  | { pid: number; kind: 'signaled'; signal: number; core: boolean }
  /** A stop: `event` is a PTRACE_EVENT_* value or 0; `signal` is the stop signal. */
  | { pid: number; kind: 'stopped'; signal: number; event: number };

/** Decode a raw wait status word, as the W* macros do. */
export function decodeWaitStatus(pid: number, status: number): WaitStatus {
  const low = status & 0x7f;
  if (low === 0) return { pid, kind: 'exited', code: (status >> 8) & 0xff };
  if ((status & 0xff) === 0x7f)
    return { pid, kind: 'stopped', signal: (status >> 8) & 0xff, event: status >>> 16 };
  return { pid, kind: 'signaled', signal: low, core: (status & 0x80) !== 0 };
}

/**
 * Wait for `pid` (or -1 for any child or tracee) with __WALL, so threads are reported too.
 * With WNOHANG, returns null when nothing is ready.
 */
export function waitpid(pid: number, options = 0): WaitStatus | null {
  const status = Buffer.alloc(4);
  const got = syscall(NR.wait4, 'wait4', () => [String(pid)], pid, status, options | WALL, 0);
  return got === 0 ? null : decodeWaitStatus(got, status.readInt32LE(0));
}

const P_PID = 1;
const WEXITED = 4;
const WNOWAIT = 0x01000000;
/** siginfo_t's si_code for a child that ended: exited, killed, dumped core. */
const CLD_ENDED = new Set([1, 2, 3]);
const SIGINFO_SIZE = 128;

/**
 * Whether child `pid` has ended, without collecting anything else: a ptrace stop another part of
 * ferry waits for stays where it is (waitid with WNOWAIT peeks; only an end is then reaped).
 */
export function reapIfEnded(pid: number): WaitStatus | null {
  const info = Buffer.alloc(SIGINFO_SIZE);
  syscall(NR.waitid, 'waitid', () => [String(pid)], P_PID, pid, info, WEXITED | WNOHANG | WNOWAIT | WALL, 0);
  // si_pid (offset 16) is 0 when nothing is ready; si_code at offset 8.
  if (info.readInt32LE(16) === 0 || !CLD_ENDED.has(info.readInt32LE(8))) return null;
  return waitpid(pid, WNOHANG);
}
