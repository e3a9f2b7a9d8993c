// /proc/PID/pagemap: one 64-bit entry per virtual page. Decoding, and reading many entries per call
// (never one read per page).
import { readSync } from 'node:fs';
import { procError } from './files.js';

export const PAGE_SIZE = 4096;
export const PAGE_SHIFT = 12n;

/** Bits of a pagemap entry (Documentation/admin-guide/mm/pagemap.rst). */
export const PM = {
  PRESENT: 1n << 63n,
  SWAPPED: 1n << 62n,
  FILE: 1n << 61n,
  GUARD: 1n << 58n,
  UFFD_WP: 1n << 57n,
  EXCLUSIVE: 1n << 56n,
  SOFT_DIRTY: 1n << 55n,
  PFN_MASK: (1n << 55n) - 1n,
} as const;

export interface PagemapEntry {
  present: boolean;
  swapped: boolean;
  /** A page-cache page or shared anonymous (shmem) page. */
  file: boolean;
  exclusive: boolean;
  softDirty: boolean;
  uffdWp: boolean;
  /** Page frame number when present (0 without CAP_SYS_ADMIN). */
  pfn: bigint;
  /** Swap type and offset when swapped. */
  swapType: number;
  swapOffset: bigint;
}

export function decodePagemapEntry(value: bigint): PagemapEntry {
  const present = (value & PM.PRESENT) !== 0n;
  const swapped = (value & PM.SWAPPED) !== 0n;
  const low = value & PM.PFN_MASK;
  return {
    present,
    swapped,
    file: (value & PM.FILE) !== 0n,
    exclusive: (value & PM.EXCLUSIVE) !== 0n,
    softDirty: (value & PM.SOFT_DIRTY) !== 0n,
    uffdWp: (value & PM.UFFD_WP) !== 0n,
    pfn: present ? low : 0n,
    swapType: swapped ? Number(low & 0x1fn) : 0,
    swapOffset: swapped ? low >> 5n : 0n,
  };
}

/** Bits of an entry's high 32-bit word, for scanning entries without bigint arithmetic. */
export const PM_HIGH = {
  PRESENT: 1 << 31,
  SWAPPED: 1 << 30,
  FILE: 1 << 29,
  GUARD: 1 << 26,
  UFFD_WP: 1 << 25,
  EXCLUSIVE: 1 << 24,
  SOFT_DIRTY: 1 << 23,
  PFN_MASK: (1 << 23) - 1,
} as const;

/**
 * Read the entries for `pages` pages from virtual address `start` into `out` (a Buffer of at least
 * pages * 8 bytes). Returns the number of entries read.
 */
export function readPagemap(pid: number, fd: number, start: bigint, pages: number, out: Buffer): number {
  const position = Number((start >> PAGE_SHIFT) * 8n);
  let done = 0;
  const want = pages * 8;
  while (done < want) {
    let got: number;
    try {
      got = readSync(fd, out, done, want - done, position + done);
    } catch (err) {
      return procError(pid, 'pagemap', err);
    }
    if (got === 0) break;
    done += got;
  }
  return Math.floor(done / 8);
}
