// pidfd_open and pidfd_getfd: a stable handle on a process, and a copy of one of its descriptors;
// signals through one, and whether its process has ended.
import { closeSync } from 'node:fs';
import { syscall } from './call.js';

import { NR } from './nr.js';
import { readable } from './poll.js';

export function pidfdOpen(pid: number, flags = 0): number {
  return syscall(NR.pidfd_open, 'pidfd_open', () => [String(pid)], pid, flags);
}

/** Duplicate descriptor `targetFd` of the process behind `pidfd` into this process. */
export function pidfdGetfd(pidfd: number, targetFd: number): number {
  return syscall(NR.pidfd_getfd, 'pidfd_getfd', () => [String(pidfd), String(targetFd)], pidfd, targetFd, 0);
}

/** Copy descriptor `fd` of process `pid` into this process (pidfd_getfd through a pidfd of its). */
export function copyFd(pid: number, fd: number): number {
  const pidfd = pidfdOpen(pid);
  try {
    return pidfdGetfd(pidfd, fd);
  } finally {
    closeSync(pidfd);
  }
}

export function pidfdSendSignal(pidfd: number, signal: number): void {
  syscall(
    NR.pidfd_send_signal,
    'pidfd_send_signal',
    () => [String(pidfd), String(signal)],
    pidfd,
    signal,
    0,
    0,
  );
}

/**
 * Whether the process behind `pidfd` has ended (a zombie or reaped), waiting up to `timeoutMs` for
 * it: a pidfd becomes readable when its process exits.
 */
export function pidfdExited(pidfd: number, timeoutMs = 0): boolean {
  return readable([pidfd], timeoutMs).length > 0;
}
