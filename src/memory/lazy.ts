// Lazy pages (post-copy): a restored process runs before its memory is in. Its private anonymous
// VMAs are registered on a userfaultfd for missing pages; ferry serves each fault with the page's
// bytes (UFFDIO_COPY; UFFDIO_ZEROPAGE where the image has none) while it copies every other page
// in, in the background, until all are there. It goes in turns: read the messages and answer them
// on the main thread, then copy a few chunks at once on libuv's threads. No copy is ever under way
// while a message is read, so a range the process dropped or moved is never filled with stale
// bytes.
import { closeSync, fstatSync, openSync } from 'node:fs';
import { constants } from 'node:os';
import { FerryError } from '../errors.js';
import { PAGE_SIZE } from '../proc/pagemap.js';
import { errnoName } from '../sys/errno.js';
import { faultPoint } from '../sys/fault.js';
import { MAP, mmap, munmap, PROT } from '../sys/mman.js';
import { addressOf } from '../sys/libc.js';
import { readableAsync } from '../sys/poll.js';
import { processVmWritevAsync, type RemoteRange } from '../sys/process-vm.js';
import {
  readUffdMessages,
  UFFD_FEATURE,
  uffdApi,
  uffdRegister,
  uffdTryCopy,
  uffdTryCopyAsync,
  uffdTryZeropage,
  type UffdMessage,
} from '../sys/uffd.js';
import { openPageScanner } from '../vma/pages.js';
import { cutSpans, intersectSpans, spanAt, subtractSpans, unionSpans, type Span } from '../vma/spans.js';
import { clipSource, resolvePages, type PageSource } from '../image/page-layers.js';
import type { ProcessImage } from '../read-image.js';
import { userfaultfdIn } from './userfaultfd.js';
import type { RemoteSyscalls } from '../tracee/remote.js';

const { EAGAIN, EEXIST, ESRCH, ENOENT } = constants.errno;
const PAGE = BigInt(PAGE_SIZE);

/** Bytes of one copy of the background's: a fault waits for at most one turn of FILL_WIDTH of them. */
const FILL_CHUNK = 512 << 10;
/** Chunks the background copies at once. */
const FILL_WIDTH = 4;
/** Bytes a fault brings in: its page and those after it in the same run, as a read-ahead. */
const FAULT_AROUND = 64 << 10;
/** How long a wait for a fault lasts before it is made again (the descriptors may have changed). */
const POLL_MS = 100;
/** The events a lazy restore asks for: without them a fork, mremap or madvise would lose pages. */
export const LAZY_FEATURES =
  UFFD_FEATURE.EVENT_FORK | UFFD_FEATURE.EVENT_REMAP | UFFD_FEATURE.EVENT_REMOVE | UFFD_FEATURE.EVENT_UNMAP;

/** Missing pages [start, end) whose bytes are at `src` in ferry's own memory. */
export interface Run extends Span {
  src: bigint;
  /** The buffer `src` points into, kept alive as long as the run is. */
  hold?: Buffer;
}

/** A layer's page data, mapped here: where each stored range's bytes are. */
export interface MappedData {
  /** Address of the data's first byte in ferry's memory. */
  base: bigint;
  size: number;
}

/**
 * Map page file `path` read-only (shared: the page cache's own memory, nothing copied): its first
 * `size` bytes, all of it by default.
 */
export function mapFile(path: string, size?: number): MappedData {
  const fd = openSync(path, 'r');
  try {
    const bytes = size ?? fstatSync(fd).size;
    return { base: bytes > 0 ? mmap(0n, bytes, PROT.READ, MAP.SHARED, fd, 0) : 0n, size: bytes };
  } finally {
    closeSync(fd);
  }
}

export function unmapData(data: MappedData): void {
  if (data.size > 0) munmap(data.base, data.size);
}

/** What a page server did. */
export interface LazyTotals {
  /** Pages the background copied in. */
  filledPages: number;
  /** Faults answered with the pages' bytes, and with zeros (pages the process never had). */
  faults: number;
  zeroFaults: number;
  /** Faults whose pages were asked of a migration's source, not there yet. */
  requested: number;
  /** Children the process forked meanwhile, each served as well. */
  forks: number;
  /** Milliseconds from the start of the service until every page was in. */
  ms: number;
}

/** mremap() moved [from, from + len) to `to`. */
interface Move {
  from: bigint;
  to: bigint;
  len: bigint;
}

/** The missing pages of one address space (the restored process's, or a child's it forked). */
class Missing {
  /** Sorted, disjoint. */
  runs: Run[];
  /** The background's next address. */
  next = 0n;
  gone = false;
  /** Ranges the process dropped or unmapped: zeros, whatever arrives for them later (sorted). */
  dropped: Span[] = [];
  /** Its mremap() calls, in order: where pages that arrive later go. */
  moves: Move[] = [];
  /** Faulted pages waiting for their bytes (a migration's source sends them). */
  parked: bigint[] = [];

  constructor(
    readonly fd: number,
    runs: Run[],
  ) {
    this.runs = runs;
  }

  /** A child's, forked from this one: it misses what this one missed at the fork. */
  fork(fd: number): Missing {
    const child = new Missing(
      fd,
      this.runs.map((r) => ({ ...r })),
    );
    child.dropped = this.dropped.map((d) => ({ ...d }));
    child.moves = [...this.moves];
    return child;
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

  isDropped(addr: bigint): boolean {
    return spanAt(this.dropped, addr) !== undefined;
  }

  /** Take [start, end) out of the runs: its pages are in, or no longer the image's. Returns what went. */
  cut(start: bigint, end: bigint): Run[] {
    const i = this.after(start);
    let j = i;
    const keep: Run[] = [];
    const taken: Run[] = [];
    for (; j < this.runs.length && this.runs[j]!.start < end; j++) {
      const r = this.runs[j]!;
      if (r.start < start) keep.push({ ...r, end: start });
      const a = r.start > start ? r.start : start;
      const b = r.end < end ? r.end : end;
      taken.push({ ...r, start: a, end: b, src: r.src + (a - r.start) });
      if (r.end > end) keep.push({ ...r, start: end, src: r.src + (end - r.start) });
    }
    if (j > i) this.runs.splice(i, j - i, ...keep);
    return taken;
  }

  /** The process dropped or unmapped [start, end). */
  drop(start: bigint, end: bigint): void {
    this.cut(start, end);
    this.dropped = unionSpans(this.dropped, [{ start, end }]);
  }

  /** mremap() moved [from, from + len) to `to`: so do the runs there, and the background starts over. */
  move(from: bigint, to: bigint, len: bigint): void {
    const shift = <T extends Span>(r: T): T => ({ ...r, start: r.start - from + to, end: r.end - from + to });
    const runs = this.cut(from, from + len).map(shift);
    this.cut(to, to + len); // the old mapping there is gone
    for (const r of runs) this.runs.splice(this.after(r.start), 0, r);
    const source = [{ start: from, end: from + len }];
    const moved = intersectSpans(this.dropped, source).map(shift);
    const stayed = subtractSpans(subtractSpans(this.dropped, source), [{ start: to, end: to + len }]);
    this.dropped = unionSpans(stayed, moved);
    this.moves.push({ from, to, len });
    this.next = 0n;
  }

  /** Where the pages of [start, end), as the source has them, are now: each piece and its shift. */
  place(start: bigint, end: bigint): { start: bigint; end: bigint; shift: bigint }[] {
    let pieces = [{ start, end, shift: 0n }];
    for (const m of this.moves) {
      const next: typeof pieces = [];
      for (const p of pieces) {
        const a = p.start + p.shift;
        const b = p.end + p.shift;
        const lo = a > m.from ? a : m.from;
        const hi = b < m.from + m.len ? b : m.from + m.len;
        if (lo >= hi) {
          next.push(p);
          continue;
        }
        if (a < lo) next.push({ ...p, end: lo - p.shift });
        next.push({ start: lo - p.shift, end: hi - p.shift, shift: p.shift + m.to - m.from });
        if (hi < b) next.push({ ...p, start: hi - p.shift });
      }
      pieces = next;
    }
    return pieces;
  }

  /** Where the page at `addr` was at the source (the moves undone). */
  sourceOf(addr: bigint): bigint {
    let at = addr;
    for (let i = this.moves.length - 1; i >= 0; i--) {
      const m = this.moves[i]!;
      if (at >= m.to && at < m.to + m.len) at = at - m.to + m.from;
    }
    return at;
  }

  /** Bytes that arrived for [start, end) of the source's addresses, at `src` here. */
  add(start: bigint, end: bigint, src: bigint, hold?: Buffer): void {
    for (const p of this.place(start, end)) {
      for (const f of subtractSpans([{ start: p.start + p.shift, end: p.end + p.shift }], this.dropped)) {
        this.cut(f.start, f.end);
        const run: Run = { start: f.start, end: f.end, src: src + (f.start - p.shift - start), hold };
        this.runs.splice(this.after(f.start), 0, run);
        if (f.start < this.next) this.next = f.start;
      }
    }
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
      const granted = uffdApi(fd, LAZY_FEATURES);
      if ((granted & LAZY_FEATURES) !== LAZY_FEATURES)
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

/** How a lazy restore asks a migration's source for pages it does not have yet. */
export interface PageRequests {
  /** Ask for the pages of [addr, addr + len) as the source has them (sent in time, by arrive()). */
  request(addr: bigint, len: number): void;
}

/**
 * Serves the lazy memories of restored processes until every page is in: their faults first, a
 * chunk of the background's copy between. The pages come from the image (runs known from the
 * start), or from a migration's source (`requests`: they arrive(), in the background and on
 * request, until end()). Its userfaultfds are then closed (their VMAs unregistered: the kernel
 * fills a fault from then on, with zeros, as it would have), and `allIn` called. `done` rejects
 * if a page cannot be served: the caller kills the processes.
 */
export class PageServer {
  readonly done: Promise<LazyTotals>;
  private readonly all: Missing[];
  private readonly totals: LazyTotals = {
    filledPages: 0,
    faults: 0,
    zeroFaults: 0,
    requested: 0,
    forks: 0,
    ms: 0,
  };
  /** No more bytes will come: pages not in the runs are zeros. */
  private ended: boolean;
  /** Faults answered EAGAIN (the mappings were changing): answered again after the next messages. */
  private retry: [Missing, bigint][] = [];
  /** Blocks of FAULT_AROUND bytes asked of the source already. */
  private readonly asked = new Set<bigint>();
  private wake: (() => void) | undefined;
  /** Data mapped for keep(). */
  private readonly mapped: MappedData[] = [];
  private readonly buf = Buffer.alloc(32 * 128);

  constructor(
    private readonly memories: readonly LazyMemory[],
    allIn: () => void,
    private readonly requests?: PageRequests,
  ) {
    this.all = memories.map((m) => m.take());
    this.ended = requests === undefined;
    this.done = this.run(allIn);
  }

  /** The source's bytes of [addr, addr + data.length) came. */
  arrive(addr: bigint, data: Buffer): void {
    const src = addressOf(data);
    for (const m of this.all) if (!m.gone) m.add(addr, addr + BigInt(data.length), src, data);
    this.wake?.();
  }

  /**
   * Hybrid: the source says the pre-copy rounds' pages in `runs` (bytes mapped here, in `data`,
   * unmapped at the end) are as the process has them.
   */
  keep(runs: readonly Run[], data: readonly MappedData[]): void {
    this.mapped.push(...data);
    for (const r of runs) for (const m of this.all) if (!m.gone) m.add(r.start, r.end, r.src);
    this.wake?.();
  }

  /** Every page the source has came: the others are zeros. */
  end(): void {
    this.ended = true;
    this.wake?.();
  }

  private async run(allIn: () => void): Promise<LazyTotals> {
    const started = performance.now();
    let polling: Promise<unknown> | undefined;
    try {
      for (;;) {
        this.drain();
        if ((await this.fillSome()) || this.retry.length > 0) {
          faultPoint('lazy');
          continue;
        }
        if (this.ended) break;
        // Nothing to copy until the source sends more: wait for it, or for a fault.
        const fds = this.all.filter((m) => !m.gone).map((m) => m.fd);
        polling ??= readableAsync(fds, POLL_MS).finally(() => (polling = undefined));
        await Promise.race([polling, new Promise<void>((resolve) => (this.wake = resolve))]);
        this.wake = undefined;
      }
      this.totals.ms = performance.now() - started;
    } finally {
      await polling; // its descriptors stay open until it is over
      for (const m of this.all) closeSync(m.fd);
      for (const m of this.memories) m.unmap();
      this.mapped.forEach(unmapData);
    }
    // Not before: what it does may touch a page the process never had, which only the kernel
    // fills now (ferry, doing it, could not serve the fault).
    allIn();
    return this.totals;
  }

  /** Answer a fault at `addr` of `m`: its bytes, zeros, or (not here yet) ask for them. */
  private answer(m: Missing, addr: bigint): void {
    const r = m.at(addr);
    if (r === undefined) {
      if (!this.ended && !m.isDropped(addr)) return this.park(m, addr);
      const errno = uffdTryZeropage(m.fd, addr, PAGE_SIZE);
      if (errno === EAGAIN) this.retry.push([m, addr]);
      else if (errno === ESRCH) m.gone = true;
      else if (errno !== 0 && errno !== EEXIST && errno !== ENOENT)
        throw pageError('UFFDIO_ZEROPAGE', addr, errno);
      else if (errno === 0) this.totals.zeroFaults++;
      return;
    }
    const end = r.end < addr + BigInt(FAULT_AROUND) ? r.end : addr + BigInt(FAULT_AROUND);
    const out = uffdTryCopy(m.fd, addr, r.src + (addr - r.start), Number(end - addr));
    if (out.errno === EAGAIN) this.retry.push([m, addr]);
    else if (out.errno === ESRCH) m.gone = true;
    else if (out.errno !== 0 && out.errno !== EEXIST && out.errno !== ENOENT)
      throw pageError('UFFDIO_COPY', addr, out.errno);
    else {
      this.totals.faults++;
      // What was copied, and the page found there already (EEXIST) or not mapped (ENOENT).
      m.cut(addr, out.errno === 0 ? end : addr + BigInt(out.copied) + PAGE);
    }
  }

  /** A fault on a page the source has not sent yet: ask for its block (once), answer on arrival. */
  private park(m: Missing, addr: bigint): void {
    m.parked.push(addr);
    const block = m.sourceOf(addr) & ~BigInt(FAULT_AROUND - 1);
    if (this.asked.has(block)) return;
    this.asked.add(block);
    this.totals.requested++;
    this.requests!.request(block, FAULT_AROUND);
  }

  private handle(m: Missing, msg: UffdMessage): void {
    switch (msg.event) {
      case 'pagefault':
        return this.answer(m, msg.address);
      case 'fork':
        this.totals.forks++;
        this.all.push(m.fork(msg.fd));
        return;
      case 'remap':
        return m.move(msg.from, msg.to, msg.len);
      case 'remove':
        return m.drop(msg.start, msg.end);
    }
  }

  /** Read and answer every message waiting, then the faults to answer again or now answerable. */
  private drain(): void {
    for (let i = 0; i < this.all.length; i++) {
      const m = this.all[i]!;
      if (m.gone) continue;
      for (
        let msgs = readUffdMessages(m.fd, this.buf);
        msgs.length > 0;
        msgs = readUffdMessages(m.fd, this.buf)
      )
        for (const msg of msgs) this.handle(m, msg);
    }
    const again = this.retry;
    this.retry = [];
    for (const [m, addr] of again) if (!m.gone) this.answer(m, addr);
    for (const m of this.all) {
      if (m.parked.length === 0 || m.gone) continue;
      const parked = m.parked;
      m.parked = [];
      for (const addr of parked) this.answer(m, addr);
    }
  }

  /**
   * Copy the next chunks of the memories' missing pages, FILL_WIDTH at once on libuv's threads (the
   * main thread reads what arrives meanwhile); false when none is left anywhere. No message is
   * read while they run (drain() comes after): a range the process drops or moves meanwhile has
   * its event wait, so no copy can land in it after the event is read.
   */
  private async fillSome(): Promise<boolean> {
    const jobs: { m: Missing; start: bigint; end: bigint; src: bigint }[] = [];
    for (const m of this.all) {
      if (m.gone) continue;
      for (let at = m.next, r = m.from(at); r && jobs.length < FILL_WIDTH; r = m.from(at)) {
        const start = r.start > at ? r.start : at;
        const end = r.end < start + BigInt(FILL_CHUNK) ? r.end : start + BigInt(FILL_CHUNK);
        jobs.push({ m, start, end, src: r.src + (start - r.start) });
        at = end;
      }
      if (jobs.length >= FILL_WIDTH) break;
    }
    if (jobs.length === 0) {
      // Runs behind a memory's cursor (bytes that came for pages it had passed): from the start.
      const behind = this.all.filter((m) => !m.gone && m.runs.length > 0);
      for (const m of behind) m.next = 0n;
      return behind.length > 0;
    }
    const outcomes = await Promise.all(
      jobs.map((j) => uffdTryCopyAsync(j.m.fd, j.start, j.src, Number(j.end - j.start))),
    );
    /** Per memory, where the first chunk that did not complete stopped. */
    const stopped = new Map<Missing, bigint>();
    jobs.forEach(({ m, start, end }, k) => {
      const out = outcomes[k]!;
      this.totals.filledPages += out.copied / PAGE_SIZE;
      if (out.errno === ESRCH) {
        m.gone = true;
        return;
      }
      if (out.errno === EAGAIN) {
        // An event is waiting: it is read before this goes on.
        m.cut(start, start + BigInt(out.copied));
        if (!stopped.has(m)) stopped.set(m, start + BigInt(out.copied));
        return;
      }
      if (out.errno !== 0 && out.errno !== EEXIST && out.errno !== ENOENT)
        throw pageError('UFFDIO_COPY', start, out.errno);
      // Past what was copied: the page found there already (EEXIST), or not mapped (ENOENT).
      const stop = out.errno === 0 ? end : start + BigInt(out.copied) + PAGE;
      m.cut(start, stop);
      if (stop < end && !stopped.has(m)) stopped.set(m, stop);
      if (!stopped.has(m)) m.next = end;
    });
    for (const [m, at] of stopped) m.next = at;
    return true;
  }
}

function pageError(call: string, addr: bigint, errno: number): FerryError {
  return new FerryError(
    'FERRY_RESTORE_FAILED',
    `${call} at 0x${addr.toString(16)} failed: ${errnoName(errno)}`,
  );
}

/**
 * Where the pages in `keep` are in the pre-copy rounds' layers of `image` (all but its last, the
 * frozen copy's), mapped here: those the rounds hold as zeros have none. Refuses a compressed
 * round (its pages cannot be copied from in place), rather than leave kept pages to be zeros.
 */
export function roundRuns(image: ProcessImage, keep: readonly Span[]): { runs: Run[]; data: MappedData[] } {
  const rounds = image.layers.slice(0, -1);
  const runs: Run[] = [];
  const data: MappedData[] = [];
  const bases = new Map<number, bigint>();
  try {
    for (const src of intersectSources(resolvePages(rounds), keep)) {
      if (src.layer === null) continue;
      const layer = rounds[src.layer]!;
      if (layer.index.compressed)
        throw new FerryError(
          'FERRY_UNSUPPORTED',
          `${layer.name} is compressed: post-copy reads the rounds in place`,
        );
      let base = bases.get(src.layer);
      if (base === undefined) {
        data.push(mapFile(layer.file));
        bases.set(src.layer, (base = data.at(-1)!.base));
      }
      runs.push({ start: src.start, end: src.end, src: base + BigInt(src.offset) });
    }
  } catch (err) {
    data.forEach(unmapData);
    throw err;
  }
  return { runs, data };
}

/** The parts of `sources` (sorted) inside `spans` (sorted), each with its offset moved along. */
function intersectSources(sources: readonly PageSource[], spans: readonly Span[]): PageSource[] {
  if (sources.length === 0) return [];
  const hull = { start: sources[0]!.start, end: sources.at(-1)!.end };
  return cutSpans(sources, subtractSpans([hull], spans), clipSource);
}
