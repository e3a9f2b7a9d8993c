// mmap/munmap in this process: for feature probes that need a fresh mapping of their own, and to read
// image files through the page cache without copying them.
import { syscall } from './call.js';
import { NR } from './nr.js';

export const PROT = { NONE: 0, READ: 1, WRITE: 2, EXEC: 4 } as const;
export const MAP = {
  SHARED: 0x01,
  PRIVATE: 0x02,
  DROPPABLE: 0x08,
  FIXED: 0x10,
  ANONYMOUS: 0x20,
  GROWSDOWN: 0x100,
  NORESERVE: 0x4000,
  POPULATE: 0x8000,
  FIXED_NOREPLACE: 0x100000,
} as const;

/** mremap(2) flags. */
export const MREMAP = { MAYMOVE: 1, FIXED: 2 } as const;
/** madvise(2) advice. */
export const MADV = {
  RANDOM: 1,
  SEQUENTIAL: 2,
  DONTNEED: 4,
  DONTFORK: 10,
  MERGEABLE: 12,
  HUGEPAGE: 14,
  NOHUGEPAGE: 15,
  DONTDUMP: 16,
  WIPEONFORK: 18,
  /** Linux 6.13: the range faults with SIGSEGV until MADV_GUARD_REMOVE. */
  GUARD_INSTALL: 102,
} as const;
/** mlock2(2) flags. */
export const MLOCK_ONFAULT = 1;

export function mmap(addr: bigint, length: number, prot: number, flags: number, fd = -1, offset = 0): bigint {
  const ret = syscall(
    NR.mmap,
    'mmap',
    () => [`0x${addr.toString(16)}`, String(length)],
    addr,
    length,
    prot,
    flags,
    fd,
    offset,
  );
  return BigInt(ret);
}

export function munmap(addr: bigint, length: number): void {
  syscall(NR.munmap, 'munmap', () => [`0x${addr.toString(16)}`, String(length)], addr, length);
}

/** madvise(2) on this process's own memory. */
export function madvise(addr: bigint, length: number, advice: number): void {
  syscall(
    NR.madvise,
    'madvise',
    () => [`0x${addr.toString(16)}`, String(length), String(advice)],
    addr,
    length,
    advice,
  );
}
