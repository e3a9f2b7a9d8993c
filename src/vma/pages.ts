// Which pages of a process are in memory, swapped, file-backed or the shared zero page: as runs of
// pages with the same categories, found by PAGEMAP_SCAN (Linux 6.7+) or, failing that, by reading
// /proc/PID/pagemap a megabyte at a time.
import { closeSync, openSync, readSync } from 'node:fs';
import { FerryError } from '../errors.js';
import { isErrno } from '../sys/errno.js';
import { MAP, mmap, munmap, PROT } from '../sys/mman.js';
import { PAGE_IS, PAGE_REGION_SIZE, pagemapScan, PM_SCAN } from '../sys/pagemap-scan.js';
import { closeProcFile, openProcFile } from '../proc/files.js';
import { PAGE_SHIFT, PAGE_SIZE, PM_HIGH, readPagemap } from '../proc/pagemap.js';

/** Page categories; the same bit values as the kernel's PAGE_IS_*. */
export const PAGE = {
  FILE: Number(PAGE_IS.FILE),
  PRESENT: Number(PAGE_IS.PRESENT),
  SWAPPED: Number(PAGE_IS.SWAPPED),
  ZERO: Number(PAGE_IS.PFNZERO),
  /** Written since userfaultfd write-protected it (openPresentWrittenScanner() only). */
  WRITTEN: Number(PAGE_IS.WRITTEN),
} as const;

/** Pages [start, end) that share `flags` (PAGE bits). Only pages present or swapped are reported. */
export interface PageRun {
  start: bigint;
  end: bigint;
  flags: number;
}

export type ScanMethod = 'pagemap-scan' | 'pagemap';

export interface Range {
  start: bigint;
  end: bigint;
}

export interface PageScanner {
  readonly method: ScanMethod;
  /** Report every run of present or swapped pages inside `range`, in address order. */
  scan(range: Range, onRun: (run: PageRun) => void): void;
  close(): void;
}

/** page_region slots per PAGEMAP_SCAN call (192 KiB). */
export const SCAN_REGIONS = 8192;
const READ_PAGES = 131072;

/** Which pages a PAGEMAP_SCAN walk reports, beyond present or swapped ones. */
interface ScanFilter {
  flags: bigint;
  categoryMask: bigint;
  /** Categories reported beyond present, swapped, file and zero. */
  alsoReturn: bigint;
}

const ALL_PAGES: ScanFilter = { flags: 0n, categoryMask: 0n, alsoReturn: 0n };

class ScanIoctlScanner implements PageScanner {
  readonly method = 'pagemap-scan';
  private readonly vec: Buffer;
  constructor(
    private readonly fd: number,
    regionsPerCall: number,
    private readonly filter: ScanFilter = ALL_PAGES,
  ) {
    this.vec = Buffer.alloc(regionsPerCall * PAGE_REGION_SIZE);
  }

  /**
   * Calls PAGEMAP_SCAN until the range is covered. When the output vector fills up exactly, Linux
   * (seen on 6.18) may report a walk_end before the end of the last region it returned, and the next
   * call then reports those pages again: each call resumes after what is already covered, and
   * regions are clipped to start there.
   */
  scan(range: Range, onRun: (run: PageRun) => void): void {
    let covered = range.start;
    while (covered < range.end) {
      const { regions, walkEnd } = pagemapScan(
        this.fd,
        {
          start: covered,
          end: range.end,
          flags: this.filter.flags,
          categoryMask: this.filter.categoryMask,
          categoryAnyof: PAGE_IS.PRESENT | PAGE_IS.SWAPPED,
          returnMask:
            PAGE_IS.PRESENT | PAGE_IS.SWAPPED | PAGE_IS.FILE | PAGE_IS.PFNZERO | this.filter.alsoReturn,
        },
        this.vec,
      );
      const from = covered;
      for (const r of regions) {
        const start = r.start > covered ? r.start : covered;
        if (start >= r.end) continue;
        onRun({ start, end: r.end, flags: Number(r.categories) });
        covered = r.end;
      }
      if (walkEnd > covered) covered = walkEnd;
      if (covered <= from) break;
    }
  }

  close(): void {
    closeProcFile(this.fd);
  }
}

class PagemapReadScanner implements PageScanner {
  readonly method = 'pagemap';
  private readonly buf = Buffer.alloc(READ_PAGES * 8);
  private readonly words = new Uint32Array(this.buf.buffer, this.buf.byteOffset, READ_PAGES * 2);
  constructor(
    private readonly pid: number,
    private readonly fd: number,
    private readonly zeroPfn: number | undefined,
  ) {}

  private flagsAt(i: number): number {
    const hi = this.words[i * 2 + 1]!;
    if ((hi & (PM_HIGH.PRESENT | PM_HIGH.SWAPPED)) === 0) return 0;
    let flags = hi & PM_HIGH.PRESENT ? PAGE.PRESENT : PAGE.SWAPPED;
    if (hi & PM_HIGH.FILE) flags |= PAGE.FILE;
    if (hi & PM_HIGH.PRESENT && this.zeroPfn !== undefined) {
      const pfn = (hi & PM_HIGH.PFN_MASK) * 2 ** 32 + this.words[i * 2]!;
      if (pfn === this.zeroPfn) flags |= PAGE.ZERO;
    }
    return flags;
  }

  scan(range: Range, onRun: (run: PageRun) => void): void {
    let run: PageRun | undefined;
    for (let addr = range.start; addr < range.end;) {
      const pages = Math.min(READ_PAGES, Number((range.end - addr) >> PAGE_SHIFT));
      const got = readPagemap(this.pid, this.fd, addr, pages, this.buf);
      for (let i = 0; i < got; i++) {
        const flags = this.flagsAt(i);
        const page = addr + BigInt(i * PAGE_SIZE);
        if (run && (run.flags !== flags || run.end !== page)) {
          onRun(run);
          run = undefined;
        }
        if (flags === 0) continue;
        if (run) run.end = page + BigInt(PAGE_SIZE);
        else run = { start: page, end: page + BigInt(PAGE_SIZE), flags };
      }
      if (got < pages) break;
      addr += BigInt(pages * PAGE_SIZE);
    }
    if (run) onRun(run);
  }

  close(): void {
    closeProcFile(this.fd);
  }
}

/** True when this kernel answers PAGEMAP_SCAN on the given pagemap descriptor. */
function hasPagemapScan(fd: number): boolean {
  try {
    pagemapScan(fd, { start: 0n, end: 0n, returnMask: PAGE_IS.PRESENT }, Buffer.alloc(PAGE_REGION_SIZE));
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOTTY', 'EINVAL', 'EOPNOTSUPP')) return false;
    throw err;
  }
}

let cachedZeroPfn: number | undefined | null = null;

/**
 * The page frame number of the kernel's shared zero page: map a page, read it (so the kernel maps
 * the zero page there) and look its frame up in our own pagemap. Undefined without CAP_SYS_ADMIN,
 * which hides frame numbers.
 */
export function zeroPagePfn(): number | undefined {
  if (cachedZeroPfn !== null) return cachedZeroPfn;
  const addr = mmap(0n, PAGE_SIZE, PROT.READ, MAP.PRIVATE | MAP.ANONYMOUS);
  try {
    const mem = openSync('/proc/self/mem', 'r');
    try {
      readSync(mem, Buffer.alloc(1), 0, 1, Number(addr));
    } finally {
      closeSync(mem);
    }
    const fd = openProcFile(process.pid, 'pagemap');
    try {
      const entry = Buffer.alloc(8);
      readPagemap(process.pid, fd, addr, 1, entry);
      const pfn = Number(entry.readBigUInt64LE(0) & ((1n << 55n) - 1n));
      cachedZeroPfn = pfn === 0 ? undefined : pfn;
    } finally {
      closeProcFile(fd);
    }
  } finally {
    munmap(addr, PAGE_SIZE);
  }
  return cachedZeroPfn;
}

/**
 * A scanner that reports only the pages written since they were last write-protected through a
 * userfaultfd in async write-protect mode (VMAs without one are skipped); with `protect`, the
 * pages it reports are write-protected again by the same walk.
 */
export function openWrittenScanner(pid: number, protect: boolean): PageScanner {
  const fd = openProcFile(pid, 'pagemap');
  const filter = { flags: protect ? PM_SCAN.WP_MATCHING : 0n, categoryMask: PAGE_IS.WRITTEN, alsoReturn: 0n };
  return new ScanIoctlScanner(fd, SCAN_REGIONS, filter);
}

/**
 * A scanner of every present or swapped page of VMAs registered for userfaultfd write-protection,
 * the written ones flagged PAGE.WRITTEN and protected again: what a dump needs of tracked memory in
 * one walk of the page tables instead of two.
 */
export function openPresentWrittenScanner(pid: number): PageScanner {
  const fd = openProcFile(pid, 'pagemap');
  const filter = { flags: PM_SCAN.WP_MATCHING, categoryMask: 0n, alsoReturn: PAGE_IS.WRITTEN };
  return new ScanIoctlScanner(fd, SCAN_REGIONS, filter);
}

/**
 * Open a scanner on a process; 'auto' prefers PAGEMAP_SCAN and falls back to reading pagemap.
 * `regionsPerCall` sizes PAGEMAP_SCAN's output vector.
 */
export function openPageScanner(
  pid: number,
  method: ScanMethod | 'auto' = 'auto',
  regionsPerCall = SCAN_REGIONS,
): PageScanner {
  const fd = openProcFile(pid, 'pagemap');
  try {
    if (method !== 'pagemap' && hasPagemapScan(fd)) return new ScanIoctlScanner(fd, regionsPerCall);
    if (method === 'pagemap-scan') {
      throw new FerryError(
        'FERRY_UNSUPPORTED',
        'PAGEMAP_SCAN is not available on this kernel (Linux 6.7+ has it)',
      );
    }
    return new PagemapReadScanner(pid, fd, zeroPagePfn());
  } catch (err) {
    closeProcFile(fd);
    throw err;
  }
}
