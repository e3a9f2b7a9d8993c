// mmap/munmap in this process: for feature probes that need a fresh mapping of their own, and to read
// image files through the page cache without copying them.
import { koffi } from './packages.js';
import { syscall } from './call.js';
import { NR } from './nr.js';

export const PROT = { NONE: 0, READ: 1, WRITE: 2, EXEC: 4 } as const;
export const MAP = {
  SHARED: 0x01,
  PRIVATE: 0x02,
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

/**
 * Run `fn` over `length` bytes of file `fd` from `offset` (page-aligned), mapped read-only and
 * populated. The bytes are valid only during `fn`: the mapping is gone when it returns.
 */
export function withFileBytes<T>(fd: number, offset: number, length: number, fn: (bytes: Buffer) => T): T {
  const addr = mmap(0n, length, PROT.READ, MAP.SHARED | MAP.POPULATE, fd, offset);
  try {
    return fn(viewOf(addr, length));
  } finally {
    munmap(addr, length);
  }
}

/** A Buffer over `length` bytes of this process's memory at `addr` (no copy; valid while mapped). */
export function viewOf(addr: bigint, length: number): Buffer {
  return Buffer.from(koffi().view(addr, length));
}
