// Lazy pages (post-copy): a restored process runs before its memory is in. Its private anonymous
// VMAs are registered on a userfaultfd for missing pages; ferry serves each fault with the page's
// bytes (UFFDIO_COPY; UFFDIO_ZEROPAGE where the image has none) while it copies every other page
// in, in the background, until all are there. Everything runs on the main thread in turn (read the
// messages, answer them, copy one chunk): no copy is ever under way while an event is read, so a
// range the process dropped or moved is never filled with stale bytes.
import { closeSync } from 'node:fs';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { constants } from 'node:os';
import { FerryError } from '../errors.js';
import { PAGE_SIZE } from '../proc/pagemap.js';
import { errnoName } from '../sys/errno.js';
import { faultPoint } from '../sys/fault.js';
import { MAP, mmap, munmap, PROT } from '../sys/mman.js';
import { processVmWritevAsync, type RemoteRange } from '../sys/process-vm.js';
import {
  readUffdMessages,
  UFFD_FEATURE,
  uffdApi,
  uffdRegister,
  uffdTryCopy,
  uffdTryZeropage,
  type UffdMessage,
} from '../sys/uffd.js';
import { openPageScanner } from '../vma/pages.js';
import type { Span } from '../vma/spans.js';
import { userfaultfdIn } from '../state/userfaultfd.js';
import type { RemoteSyscalls } from '../tracee/remote.js';

const { EAGAIN, EEXIST, ESRCH, ENOENT } = constants.errno;
const PAGE = BigInt(PAGE_SIZE);

/** Bytes the background copies at a time: a fault waits for at most one such copy. */
const FILL_CHUNK = 512 << 10;
/** Bytes a fault brings in: its page and those after it in the same run, as a read-ahead. */
const FAULT_AROUND = 64 << 10;
/** The events a lazy restore asks for: without them a fork, mremap or madvise would lose pages. */
const FEATURES =
  UFFD_FEATURE.EVENT_FORK | UFFD_FEATURE.EVENT_REMAP | UFFD_FEATURE.EVENT_REMOVE | UFFD_FEATURE.EVENT_UNMAP;

/** Missing pages [start, end) whose bytes are at `src` in ferry's own memory. */
export interface Run extends Span {
  src: bigint;
}

/** A layer's page data, mapped here: where each stored range's bytes are. */
export interface MappedData {
  /** Address of the data's first byte in ferry's memory. */
  base: bigint;
  size: number;
}

/** Map a page file read-only (shared: the page cache's own memory, nothing copied). */
export function mapData(fd: number, size: number): MappedData {
  return { base: size > 0 ? mmap(0n, size, PROT.READ, MAP.SHARED, fd, 0) : 0n, size };
}

export function unmapData(data: MappedData): void {
  if (data.size > 0) munmap(data.base, data.size);
}

/** What a page server did. */
export interface LazyTotals {
  /** Pages the background copied in. */
  filledPages: number;
  /** Faults answered with the image's bytes, and with zeros (pages the image has none of). */
  faults: number;
  zeroFaults: number;
  /** Children the process forked meanwhile, each served as well. */
  forks: number;
  /** Milliseconds from the start of the service until every page was in. */
  ms: number;
}

/** The missing pages of one address space (the restored process's, or a child's it forked). */
class Missing {
  /** Sorted, disjoint. */
  runs: Run[];
  /** The background's next address. */
  next = 0n;
  gone = false;

  constructor(
    readonly fd: number,
    runs: Run[],
  ) {
    this.runs = runs;
  }

  /** Index of the first run that ends after `addr`. */
  private after(addr: bigint): number {
    let lo = 0;
    let hi = this.runs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.runs[mid]!.end <= addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The run holding `addr`, if any. */
  at(addr: bigint): Run | undefined {
    const r = this.runs[this.after(addr)];
    return r && r.start <= addr ? r : undefined;
  }

  /** The first run at or after `addr`. */
  from(addr: bigint): Run | undefined {
    return this.runs[this.after(addr)];
  }

  /** Take [start, end) out of the runs: its pages are in, or no longer the image's. Returns what went. */
  cut(start: bigint, end: bigint): Run[] {
    const i = this.after(start);
    let j = i;
    const keep: Run[] = [];
    const taken: Run[] = [];
    for (; j < this.runs.length && this.runs[j]!.start < end; j++) {
      const r = this.runs[j]!;
      if (r.start < start) keep.push({ start: r.start, end: start, src: r.src });
      const a = r.start > start ? r.start : start;
      const b = r.end < end ? r.end : end;
      taken.push({ start: a, end: b, src: r.src + (a - r.start) });
      if (r.end > end) keep.push({ start: end, end: r.end, src: r.src + (end - r.start) });
    }
    if (j > i) this.runs.splice(i, j - i, ...keep);
    return taken;
  }

  /** mremap() moved [from, from + len) to `to`: so do the runs there, and the background starts over. */
  move(from: bigint, to: bigint, len: bigint): void {
    const moved = this.cut(from, from + len).map((r) => ({
      ...r,
      start: r.start - from + to,
      end: r.end - from + to,
    }));
    this.cut(to, to + len); // the old mapping there is gone
    if (moved.length > 0) this.runs.splice(this.after(moved[0]!.start), 0, ...moved);
    this.next = 0n;
  }
}

/** The lazy part of one restored process: its userfaultfd, the VMAs on it, the runs they miss. */
export class LazyMemory {
  private constructor(
    private readonly pid: number,
    readonly fd: number,
    private readonly vmas: readonly Span[],
    private readonly runs: Run[],
    private readonly data: readonly MappedData[],
  ) {}

  /**
   * Made while the process is held: a userfaultfd inside it (copied out to ferry) and the runs of
   * `vmas` to fill, `runs` sorted, their bytes in `data` (unmapped with the memory). Nothing is
   * registered yet (register()).
   */
  static open(
    remote: RemoteSyscalls,
    vmas: readonly Span[],
    runs: Run[],
    data: readonly MappedData[],
  ): LazyMemory {
    let fd: number;
    try {
      fd = userfaultfdIn(remote, { kernelFaults: true }).fd;
    } catch (err) {
      data.forEach(unmapData);
      throw err;
    }
    try {
      const granted = uffdApi(fd, FEATURES);
      if ((granted & FEATURES) !== FEATURES)
        throw new FerryError(
          'FERRY_UNSUPPORTED',
          "this kernel's userfaultfd lacks the fork, remap, remove and unmap events a lazy restore needs",
        );
    } catch (err) {
      closeSync(fd);
      data.forEach(unmapData);
      throw err;
    }
    return new LazyMemory(remote.pid, fd, vmas, runs, data);
  }

  /** Pages still to come in. */
  get pages(): number {
    return this.runs.reduce((n, r) => n + Number(r.end - r.start) / PAGE_SIZE, 0);
  }

  /**
   * Register the VMAs, the last thing before the process runs (after every call ferry has it make:
   * one the kernel served by writing into a VMA, as rseq's registration does, would wait for a
   * page ferry cannot serve then). Pages the kernel made meanwhile are written in here and now.
   */
  async register(): Promise<void> {
    for (const v of this.vmas) uffdRegister(this.fd, v.start, v.end - v.start, 'missing');
    const present: Span[] = [];
    const scanner = openPageScanner(this.pid);
    try {
      for (const v of this.vmas) scanner.scan(v, (run) => present.push({ start: run.start, end: run.end }));
    } finally {
      scanner.close();
    }
    const missing = new Missing(this.fd, this.runs);
    for (const p of present) {
      for (const r of missing.cut(p.start, p.end)) {
        const len = Number(r.end - r.start);
        const local: RemoteRange[] = [{ addr: r.src, len }];
        const got = await processVmWritevAsync(this.pid, local, [{ addr: r.start, len }]);
        if (got !== len)
          throw new FerryError(
            'FERRY_RESTORE_FAILED',
            `wrote ${got} of ${len} bytes of pages at 0x${r.start.toString(16)}`,
          );
      }
    }
  }

  /** Close its userfaultfd (the VMAs are unregistered) and unmap its data. */
  close(): void {
    closeSync(this.fd);
    this.unmap();
  }

  /** Unmap its data, once nothing copies from it any more. */
  unmap(): void {
    this.data.forEach(unmapData);
  }

  /** The runs still missing (for the server). */
  take(): Missing {
    return new Missing(this.fd, this.runs);
  }
}

/**
 * Serve the lazy memories until every page is in: their faults first, a chunk of the background's
 * copy between. Resolves with what it did; the userfaultfds are then closed (their VMAs
 * unregistered: the kernel fills a fault from then on, with zeros, as it would have), after
 * `beforeClose`. Rejects if a page cannot be served: the caller kills the processes.
 */
export async function servePages(
  memories: readonly LazyMemory[],
  beforeClose: () => void,
): Promise<LazyTotals> {
  const started = performance.now();
  const all = memories.map((m) => m.take());
  const totals: LazyTotals = { filledPages: 0, faults: 0, zeroFaults: 0, forks: 0, ms: 0 };
  const buf = Buffer.alloc(32 * 128);
  /** Faults answered EAGAIN (the mappings were changing): answered again after the next messages. */
  let retry: [Missing, bigint][] = [];
  const answer = (m: Missing, addr: bigint): void => {
    const r = m.at(addr);
    if (r === undefined) {
      const errno = uffdTryZeropage(m.fd, addr, PAGE_SIZE);
      if (errno === EAGAIN) retry.push([m, addr]);
      else if (errno === ESRCH) m.gone = true;
      else if (errno !== 0 && errno !== EEXIST && errno !== ENOENT)
        throw pageError('UFFDIO_ZEROPAGE', addr, errno);
      else if (errno === 0) totals.zeroFaults++;
      return;
    }
    const end = r.end < addr + BigInt(FAULT_AROUND) ? r.end : addr + BigInt(FAULT_AROUND);
    const out = uffdTryCopy(m.fd, addr, r.src + (addr - r.start), Number(end - addr));
    if (out.errno === EAGAIN) retry.push([m, addr]);
    else if (out.errno === ESRCH) m.gone = true;
    else if (out.errno !== 0 && out.errno !== EEXIST && out.errno !== ENOENT)
      throw pageError('UFFDIO_COPY', addr, out.errno);
    else {
      totals.faults++;
      // What was copied, and the page found there already (EEXIST) or not mapped (ENOENT).
      m.cut(addr, out.errno === 0 ? end : addr + BigInt(out.copied) + PAGE);
    }
  };
  const handle = (m: Missing, msg: UffdMessage): void => {
    switch (msg.event) {
      case 'pagefault':
        return answer(m, msg.address);
      case 'fork':
        totals.forks++;
        // The child misses what its parent missed at the fork.
        all.push(
          new Missing(
            msg.fd,
            m.runs.map((r) => ({ ...r })),
          ),
        );
        return;
      case 'remap':
        return m.move(msg.from, msg.to, msg.len);
      case 'remove':
        m.cut(msg.start, msg.end);
        return;
    }
  };
  /** Read and answer every message waiting, then the faults to answer again. */
  const drain = (): void => {
    for (let i = 0; i < all.length; i++) {
      const m = all[i]!;
      if (m.gone) continue;
      for (let msgs = readUffdMessages(m.fd, buf); msgs.length > 0; msgs = readUffdMessages(m.fd, buf))
        for (const msg of msgs) handle(m, msg);
    }
    const again = retry;
    retry = [];
    for (const [m, addr] of again) if (!m.gone) answer(m, addr);
  };
  /** Copy the next chunk of one memory's missing pages; false when none is left anywhere. */
  const fillOne = (): boolean => {
    for (const m of all) {
      if (m.gone) continue;
      const r = m.from(m.next);
      if (r === undefined) continue;
      const start = r.start > m.next ? r.start : m.next;
      const end = r.end < start + BigInt(FILL_CHUNK) ? r.end : start + BigInt(FILL_CHUNK);
      const out = uffdTryCopy(m.fd, start, r.src + (start - r.start), Number(end - start));
      if (out.errno === ESRCH) {
        m.gone = true;
        return true;
      }
      if (out.errno === EAGAIN) {
        m.cut(start, start + BigInt(out.copied));
        totals.filledPages += out.copied / PAGE_SIZE;
        return true; // an event is waiting: read it before going on
      }
      if (out.errno !== 0 && out.errno !== EEXIST && out.errno !== ENOENT)
        throw pageError('UFFDIO_COPY', start, out.errno);
      // Past what was copied: the page found there already (EEXIST), or not mapped (ENOENT).
      const stop = out.errno === 0 ? end : start + BigInt(out.copied) + PAGE;
      totals.filledPages += out.copied / PAGE_SIZE;
      m.cut(start, stop);
      m.next = stop;
      return true;
    }
    return false;
  };
  try {
    for (;;) {
      drain();
      if (fillOne() || retry.length > 0) {
        await nextTurn();
        faultPoint('lazy');
        continue;
      }
      break;
    }
    totals.ms = performance.now() - started;
    beforeClose();
    return totals;
  } finally {
    for (const m of all) closeSync(m.fd);
    for (const m of memories) m.unmap();
  }
}

function pageError(call: string, addr: bigint, errno: number): FerryError {
  return new FerryError(
    'FERRY_RESTORE_FAILED',
    `${call} at 0x${addr.toString(16)} failed: ${errnoName(errno)}`,
  );
}
