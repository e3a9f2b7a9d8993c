// kcmp(2): whether two descriptors of traced processes are one open file, and whether two processes
// share a kernel object (their memory, descriptor table, filesystem context or signal handlers).
import { syscall } from './call.js';
import { NR } from './nr.js';

const KCMP_FILE = 0;
/** What two processes may share: CLONE_VM, CLONE_FILES, CLONE_FS, CLONE_SIGHAND. */
export const KCMP = { VM: 1, FILES: 2, FS: 3, SIGHAND: 4 } as const;

/** True when descriptor `a` of `pidA` and `b` of `pidB` share one open file description. */
export function sameOpenFile(pidA: number, a: number, pidB: number, b: number): boolean {
  const describe = (): string[] => [String(pidA), String(pidB), 'KCMP_FILE', String(a), String(b)];
  return syscall(NR.kcmp, 'kcmp', describe, pidA, pidB, KCMP_FILE, a, b) === 0;
}

/** True when processes `pidA` and `pidB` share the object `type` (a KCMP value). */
export function shareObject(pidA: number, pidB: number, type: number): boolean {
  const describe = (): string[] => [String(pidA), String(pidB), String(type)];
  return syscall(NR.kcmp, 'kcmp', describe, pidA, pidB, type, 0, 0) === 0;
}

const KCMP_EPOLL_TFD = 7;

/**
 * True when descriptor `fd` of `pid` is the file that epoll `epfd` of `pid` watches as its `tfd`
 * (the `toff`-th watch under that number, from 0), whatever that descriptor number holds now.
 */
export function epollWatches(pid: number, fd: number, epfd: number, tfd: number, toff: number): boolean {
  const slot = new Uint32Array([epfd, tfd, toff]);
  const describe = (): string[] => [String(pid), String(pid), 'KCMP_EPOLL_TFD', String(fd), `${epfd}:${tfd}`];
  return syscall(NR.kcmp, 'kcmp', describe, pid, pid, KCMP_EPOLL_TFD, fd, slot) === 0;
}
