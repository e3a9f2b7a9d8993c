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
