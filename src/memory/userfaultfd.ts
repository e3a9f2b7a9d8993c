// A userfaultfd of a frozen process's, held by ferry: made inside the process by a remote syscall
// (the kernel ties one to the memory of the process that makes it) and copied out with pidfd_getfd.
import { O } from '../sys/fcntl.js';
import { NR } from '../sys/nr.js';
import { copyFd } from '../sys/pidfd.js';
import { UFFD_USER_MODE_ONLY } from '../sys/uffd.js';
import type { RemoteSyscalls } from '../tracee/remote.js';

/**
 * A userfaultfd made inside the process frozen behind `remote`, as a descriptor of ferry's. The
 * process's own descriptor of it is closed, unless `keep`: then it is `inProcess`. It handles
 * faults the process takes in user mode only, unless `kernelFaults` (a lazy restore's: the kernel
 * touching a missing page for a system call of the process's must wait for it too, not fail).
 */
export function userfaultfdIn(
  remote: RemoteSyscalls,
  { keep = false, kernelFaults = false }: { keep?: boolean; kernelFaults?: boolean } = {},
): { fd: number; inProcess: number | undefined } {
  const flags = O.CLOEXEC | O.NONBLOCK | (kernelFaults ? 0 : UFFD_USER_MODE_ONLY);
  const made = Number(remote.batch([{ name: 'userfaultfd', nr: NR.userfaultfd, args: [flags] }])[0]);
  try {
    return { fd: copyFd(remote.pid, made), inProcess: keep ? made : undefined };
  } finally {
    if (!keep) remote.batch([{ name: 'close', nr: NR.close, args: [made] }]);
  }
}
