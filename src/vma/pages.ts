// Which pages of a process are in memory, swapped, file-backed or the shared zero page: as runs of
// pages with the same categories, found by PAGEMAP_SCAN (Linux 6.7+) or, failing that, by reading
// /proc/PID/pagemap a megabyte at a time.
import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { FerryError } from '../errors.js';
import { isErrno } from '../sys/errno.js';
import { MADV, madvise, MAP, mmap, munmap, PROT } from '../sys/mman.js';
import {
  PAGE_IS,
  PAGE_REGION_SIZE,
  pagemapScan,
  pagemapScanAsync,
  PM_SCAN,
  type ScanRequest,
  type ScanResult,
} from '../sys/pagemap-scan.js';
import { closeProcFile, openProcFile } from '../proc/files.js';
import { parseSmaps } from '../proc/smaps.js';
import { PAGE_SHIFT, PAGE_SIZE, PM, PM_HIGH, readPagemap } from '../proc/pagemap.js';

/** Page categories; the same bit values as the kernel's PAGE_IS_*. */
export const PAGE = {
  FILE: Number(PAGE_IS.FILE),
  PRESENT: Number(PAGE_IS.PRESENT),
  SWAPPED: Number(PAGE_IS.SWAPPED),
  ZERO: Number(PAGE_IS.PFNZERO),
  /** Written since userfaultfd write-protected it (openPresentWrittenScanner() only). */
  WRITTEN: Number(PAGE_IS.WRITTEN),
  /** Written since the process's soft-dirty bits were cleared (openSoftDirtyScanner() only). */
  SOFT_DIRTY: Number(PAGE_IS.SOFT_DIRTY),
  /** A guard region's page (MADV_GUARD_INSTALL): reported as swapped too, it holds nothing. */
  GUARD: Number(PAGE_IS.GUARD),
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
const SOFT_DIRTY_PAGES: ScanFilter = {
  flags: 0n,
  categoryMask: PAGE_IS.SOFT_DIRTY,
  alsoReturn: PAGE_IS.SOFT_DIRTY,
};

/**
 * Report a PAGEMAP_SCAN call's regions from `covered` on; returns where the next call starts (no
 * further than `covered`: the walk is over). When the output vector fills up exactly, Linux (seen on
 * 6.18) may report a walk_end before the end of the last region it returned, and the next call then
 * reports those pages again: each call resumes after what is already covered, and regions are
 * clipped to start there.
 */
function takeRegions(
  covered: bigint,
  { regions, walkEnd }: ScanResult,
  onRun: (run: PageRun) => void,
): bigint {
  for (const r of regions) {
    const start = r.start > covered ? r.start : covered;
    if (start >= r.end) continue;
    onRun({ start, end: r.end, flags: Number(r.categories) });
    covered = r.end;
  }
  return walkEnd > covered ? walkEnd : covered;
}

class ScanIoctlScanner implements PageScanner {
  readonly method = 'pagemap-scan';
  private readonly vec: Buffer;
  constructor(
    readonly fd: number,
    regionsPerCall: number,
    private readonly filter: ScanFilter = ALL_PAGES,
  ) {
    this.vec = Buffer.alloc(regionsPerCall * PAGE_REGION_SIZE);
  }

  private request(start: bigint, end: bigint): ScanRequest {
    return {
      start,
      end,
      flags: this.filter.flags,
      categoryMask: this.filter.categoryMask,
      categoryAnyof: PAGE_IS.PRESENT | PAGE_IS.SWAPPED,
      returnMask:
        PAGE_IS.PRESENT |
        PAGE_IS.SWAPPED |
        PAGE_IS.FILE |
        PAGE_IS.PFNZERO |
        (guardCategory(this.fd) ? PAGE_IS.GUARD : 0n) |
        this.filter.alsoReturn,
    };
  }

  /** Calls PAGEMAP_SCAN until the range is covered. */
  scan(range: Range, onRun: (run: PageRun) => void): void {
    for (let covered = range.start; covered < range.end;) {
      const next = takeRegions(
        covered,
        pagemapScan(this.fd, this.request(covered, range.end), this.vec),
        onRun,
      );
      if (next <= covered) break;
      covered = next;
    }
  }

  /** scan() with the calls on libuv's threads, into an output vector of its own (walks run at once). */
  async walk(range: Range, onRun: (run: PageRun) => void): Promise<void> {
    const pages = Number((range.end - range.start) >> PAGE_SHIFT);
    const vec = Buffer.alloc(Math.min(this.vec.length / PAGE_REGION_SIZE, pages) * PAGE_REGION_SIZE);
    for (let covered = range.start; covered < range.end;) {
      const result = await pagemapScanAsync(this.fd, this.request(covered, range.end), vec);
      const next = takeRegions(covered, result, onRun);
      if (next <= covered) break;
      covered = next;
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
    /** Report only the pages that carry the soft-dirty bit. */
    private readonly softDirtyOnly = false,
  ) {}

  private flagsAt(i: number): number {
    const hi = this.words[i * 2 + 1]!;
    if ((hi & (PM_HIGH.PRESENT | PM_HIGH.SWAPPED)) === 0) return 0;
    if (this.softDirtyOnly && (hi & PM_HIGH.SOFT_DIRTY) === 0) return 0;
    let flags = hi & PM_HIGH.PRESENT ? PAGE.PRESENT : PAGE.SWAPPED;
    if (this.softDirtyOnly) flags |= PAGE.SOFT_DIRTY;
    if (hi & PM_HIGH.FILE) flags |= PAGE.FILE;
    if (hi & PM_HIGH.GUARD) flags |= PAGE.GUARD;
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

let guards: boolean | undefined;

/** Whether this kernel's PAGEMAP_SCAN knows guard regions (PAGE_IS_GUARD, Linux 6.14). */
function guardCategory(fd: number): boolean {
  if (guards !== undefined) return guards;
  try {
    pagemapScan(fd, { start: 0n, end: 0n, returnMask: PAGE_IS.GUARD }, Buffer.alloc(PAGE_REGION_SIZE));
    guards = true;
  } catch (err) {
    if (!isErrno(err, 'EINVAL')) throw err;
    guards = false;
  }
  return guards;
}

let marksGuards: boolean | undefined;

/**
 * Whether smaps marks each VMA that may hold guard regions (VmFlags `gu`, VM_MAYBE_GUARD; Linux
 * 6.19, and stable kernels it went back to): then a VMA without the mark holds none, and no page
 * table of it needs a walk to find them. Found once, on a guard region of ferry's own.
 */
export function smapsMarksGuards(): boolean {
  if (marksGuards !== undefined) return marksGuards;
  const addr = mmap(0n, PAGE_SIZE, PROT.READ | PROT.WRITE, MAP.PRIVATE | MAP.ANONYMOUS);
  try {
    madvise(addr, PAGE_SIZE, MADV.GUARD_INSTALL);
    const smaps = readFileSync('/proc/self/smaps', 'latin1');
    const vma = parseSmaps(smaps, '/proc/self/smaps').find((v) => v.start <= addr && addr < v.end);
    marksGuards = vma?.vmFlags.includes('gu') ?? false;
  } catch (err) {
    if (!isErrno(err, 'EINVAL')) throw err;
    marksGuards = false; // no guard regions at all on this kernel
  } finally {
    munmap(addr, PAGE_SIZE);
  }
  return marksGuards;
}

/**
 * The guard regions (MADV_GUARD_INSTALL) of process `pid` within `ranges` (sorted): the pages that
 * fault with SIGSEGV by the process's own choice. None on a kernel without them.
 */
export function guardSpans(pid: number, ranges: readonly Range[]): Range[] {
  const fd = openProcFile(pid, 'pagemap');
  try {
    if (!hasPagemapScan(fd) || !guardCategory(fd)) return [];
    const vec = Buffer.alloc(SCAN_REGIONS * PAGE_REGION_SIZE);
    const out: Range[] = [];
    for (const range of ranges) {
      for (let covered = range.start; covered < range.end;) {
        const request = {
          start: covered,
          end: range.end,
          categoryAnyof: PAGE_IS.GUARD,
          returnMask: PAGE_IS.GUARD,
        };
        const next = takeRegions(covered, pagemapScan(fd, request, vec), (run) =>
          out.push({ start: run.start, end: run.end }),
        );
        if (next <= covered) break;
        covered = next;
      }
    }
    return out;
  } finally {
    closeProcFile(fd);
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

/**
 * The pagemap entry of a page of this process's own, fresh, once read (the kernel maps its shared
 * zero page there) or written (a new page) through /proc/self/mem.
 */
function freshPageEntry(touch: 'read' | 'write'): bigint {
  const prot = touch === 'read' ? PROT.READ : PROT.READ | PROT.WRITE;
  const addr = mmap(0n, PAGE_SIZE, prot, MAP.PRIVATE | MAP.ANONYMOUS);
  try {
    const mem = openSync('/proc/self/mem', touch === 'read' ? 'r' : 'r+');
    try {
      if (touch === 'read') readSync(mem, Buffer.alloc(1), 0, 1, Number(addr));
      else writeSync(mem, Buffer.alloc(1, 1), 0, 1, Number(addr));
    } finally {
      closeSync(mem);
    }
    const fd = openProcFile(process.pid, 'pagemap');
    try {
      const entry = Buffer.alloc(8);
      readPagemap(process.pid, fd, addr, 1, entry);
      return entry.readBigUInt64LE(0);
    } finally {
      closeProcFile(fd);
    }
  } finally {
    munmap(addr, PAGE_SIZE);
  }
}

let cachedZeroPfn: number | undefined | null = null;

/**
 * The page frame number of the kernel's shared zero page, as a page just read shows it. Undefined
 * without CAP_SYS_ADMIN, which hides frame numbers.
 */
export function zeroPagePfn(): number | undefined {
  if (cachedZeroPfn !== null) return cachedZeroPfn;
  const pfn = Number(freshPageEntry('read') & PM.PFN_MASK);
  cachedZeroPfn = pfn === 0 ? undefined : pfn;
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
  return presentWrittenScanner(pid);
}

function presentWrittenScanner(pid: number): ScanIoctlScanner {
  const fd = openProcFile(pid, 'pagemap');
  const filter = { flags: PM_SCAN.WP_MATCHING, categoryMask: 0n, alsoReturn: PAGE_IS.WRITTEN };
  return new ScanIoctlScanner(fd, SCAN_REGIONS, filter);
}

/**
 * openPresentWrittenScanner()'s walk of `ranges` (in address order, apart), started now on libuv's
 * threads, beside whatever the main thread does meanwhile. Resolves to a scanner that answers from
 * what the walk found inside `ranges`, and walks what lies outside them when asked. The walk
 * protects the pages it finds written again as it goes: if it fails partway (the layout changed
 * under it), every page inside `ranges` is reported written, so none is taken for unchanged.
 */
export async function walkPresentWritten(pid: number, ranges: readonly Range[]): Promise<PageScanner> {
  const live = presentWrittenScanner(pid);
  // All at once: a walk's next call waits for this thread, which is busy meanwhile.
  const walks = ranges.map(async (range) => {
    const runs: PageRun[] = [];
    await live.walk(range, (run) => runs.push(run));
    return runs;
  });
  const found = await Promise.allSettled(walks);
  const failed = found.some((f) => f.status === 'rejected');
  const runs = found.flatMap((f) => (f.status === 'fulfilled' ? f.value : []));
  return new WalkedScanner(pid, live, ranges, failed ? undefined : runs);
}

/** walkPresentWritten()'s scanner. */
class WalkedScanner implements PageScanner {
  readonly method = 'pagemap-scan';
  private plain: PageScanner | undefined;
  private closed = false;
  constructor(
    private readonly pid: number,
    private readonly live: PageScanner,
    private readonly walked: readonly Range[],
    /** What the walk found, in address order; undefined when it failed. */
    private readonly runs: readonly PageRun[] | undefined,
  ) {}

  scan(range: Range, onRun: (run: PageRun) => void): void {
    let at = range.start;
    for (const w of this.walked) {
      if (w.end <= at) continue;
      if (w.start >= range.end) break;
      if (w.start > at) this.live.scan({ start: at, end: w.start }, onRun);
      const start = w.start > at ? w.start : at;
      const end = w.end < range.end ? w.end : range.end;
      this.inside({ start, end }, onRun);
      at = end;
    }
    if (at < range.end) this.live.scan({ start: at, end: range.end }, onRun);
  }

  private inside(piece: Range, onRun: (run: PageRun) => void): void {
    if (!this.runs) {
      this.plain ??= openPageScanner(this.pid, 'pagemap-scan');
      this.plain.scan(piece, (run) => onRun({ ...run, flags: run.flags | PAGE.WRITTEN }));
      return;
    }
    // The first run that ends after the piece starts, then the runs until it ends.
    let lo = 0;
    let hi = this.runs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.runs[mid]!.end <= piece.start) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.runs.length && this.runs[i]!.start < piece.end; i++) {
      const run = this.runs[i]!;
      onRun({
        start: run.start > piece.start ? run.start : piece.start,
        end: run.end < piece.end ? run.end : piece.end,
        flags: run.flags,
      });
    }
  }

  /** Idempotent: a dump that failed closes it whether or not its capture did. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.live.close();
    this.plain?.close();
  }
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

/**
 * A scanner of the present and swapped pages that carry the soft-dirty bit (written since the
 * process's bits were last cleared, or new since): PAGEMAP_SCAN where the kernel has it, else
 * pagemap read.
 */
export function openSoftDirtyScanner(pid: number): PageScanner {
  const fd = openProcFile(pid, 'pagemap');
  try {
    if (hasPagemapScan(fd)) return new ScanIoctlScanner(fd, SCAN_REGIONS, SOFT_DIRTY_PAGES);
    return new PagemapReadScanner(pid, fd, zeroPagePfn(), true);
  } catch (err) {
    closeProcFile(fd);
    throw err;
  }
}

let softDirty: boolean | undefined;

/**
 * Whether this kernel tracks soft-dirty bits (CONFIG_MEM_SOFT_DIRTY): a page this process just
 * wrote carries the bit in its pagemap entry.
 */
export function kernelTracksSoftDirty(): boolean {
  softDirty ??= (freshPageEntry('write') & PM.SOFT_DIRTY) !== 0n;
  return softDirty;
}
