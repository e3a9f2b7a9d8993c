// Page contents. Dump: find the pages a checkpoint stores (vma/usage.ts dumpsPage), read them with
// process_vm_readv in large batches (/proc/PID/mem where a VMA is not readable), hand them on in
// address order. Restore: ferry writes them in straight from the mapped page file on every CPU,
// with UFFDIO_COPY into the long runs of anonymous memory and process_vm_writev elsewhere, or
// decompressed through a buffer; a migration's prefill places them as they arrive (prefill.ts).
import { closeSync, openSync, readSync } from 'node:fs';
import { FerryError } from '../errors.js';
import { LayerReader, type PageSource } from '../image/page-layers.js';
import type { PageStoreWriter } from '../image/page-store.js';
import type { ProcessImage } from '../read-image.js';
import { procError } from '../proc/files.js';
import { isErrno } from '../sys/errno.js';
import { PAGE_SIZE } from '../proc/pagemap.js';
import { AT_FDCWD, dataRanges, O, punchHole } from '../sys/fcntl.js';
import { runAtOnce } from '../sys/call.js';
import { uffdApi, uffdCopyAsync, uffdRegister, uffdUnregister } from '../sys/uffd.js';
import { NR } from '../sys/nr.js';
import { MADV, MAP, mmap, munmap, PROT } from '../sys/mman.js';
import {
  encodeIovecs,
  IOV_MAX,
  processVmReadvAsync,
  processVmWritev,
  processVmWritevAsync,
  type RemoteRange,
} from '../sys/process-vm.js';
import type { RemoteCall, RemoteSyscalls } from '../tracee/remote.js';
import { openPageScanner, type PageScanner } from '../vma/pages.js';
import { intersectSpans, mergeSpans, pushSpan, spanAt, subtractSpans, type Span } from '../vma/spans.js';
import type { Vma } from '../vma/vma.js';
import { dumpsPage } from '../vma/usage.js';
import type { RestoreContext } from '../state/context.js';
import { userfaultfdIn } from './userfaultfd.js';
import { LazyMemory, mapFile, unmapData, type MappedData, type Run } from './lazy.js';
import { isFileBacked, isPrivateAnonymous, lazyCapable, type VmaRecord } from './vmas.js';

/** Bytes moved per process_vm_writev or preadv batch at restore. */
export const PAGE_BATCH = 16 << 20;
/**
 * Bytes read per process_vm_readv at dump: small, so that writing one batch out overlaps reading the
 * next, and the two staging buffers cost little to make.
 */
export const DUMP_BATCH = 4 << 20;

export interface PageRange extends RemoteRange {
  /** The VMA can be read with process_vm_readv (it is mapped readable). */
  readable: boolean;
  /** Unchanged since an earlier layer: recorded, not read. */
  earlier?: boolean;
}

/**
 * The ranges of pages a checkpoint stores, in address order, none longer than `maxLen` bytes; of
 * the pages `scanner` reports (by default, every page present or swapped). Closes the scanner.
 */
export function pagesToDump(
  pid: number,
  vmas: readonly Pick<Vma, 'end' | 'perms' | 'kind' | 'start'>[],
  maxLen: number,
  scanner: PageScanner = openPageScanner(pid),
): PageRange[] {
  const ranges: PageRange[] = [];
  try {
    let i = 0;
    for (const span of mergeSpans(vmas)) {
      scanner.scan(span, (run) => {
        for (let start = run.start; start < run.end;) {
          while (vmas[i]!.end <= start) i++;
          const vma = vmas[i]!;
          const end = run.end < vma.end ? run.end : vma.end;
          if (dumpsPage(vma, run.flags)) pushRange(ranges, start, end, vma.perms[0] === 'r', maxLen);
          start = end;
        }
      });
    }
  } finally {
    scanner.close();
  }
  return ranges;
}

function pushRange(
  ranges: PageRange[],
  start: bigint,
  end: bigint,
  readable: boolean,
  maxLen: number,
  earlier = false,
): void {
  for (let a = start; a < end; a += BigInt(maxLen)) {
    const len = Number(end - a < BigInt(maxLen) ? end - a : BigInt(maxLen));
    const last = ranges.at(-1);
    if (
      last &&
      last.readable === readable &&
      (last.earlier ?? false) === earlier &&
      last.addr + BigInt(last.len) === a &&
      last.len + len <= maxLen
    ) {
      last.len += len;
    } else {
      ranges.push(earlier ? { addr: a, len, readable, earlier } : { addr: a, len, readable });
    }
  }
}

/**
 * `ranges` with the pages in `unchanged` (sorted spans) marked `earlier`: unchanged since an earlier
 * layer, which holds them.
 */
export function markEarlier(
  ranges: readonly PageRange[],
  unchanged: readonly Span[],
  maxLen: number,
): PageRange[] {
  const out: PageRange[] = [];
  let j = 0;
  for (const r of ranges) {
    const end = r.addr + BigInt(r.len);
    while (j < unchanged.length && unchanged[j]!.end <= r.addr) j++;
    let at = r.addr;
    for (let k = j; k < unchanged.length && unchanged[k]!.start < end; k++) {
      const u = unchanged[k]!;
      const from = u.start > at ? u.start : at;
      const to = u.end < end ? u.end : end;
      pushRange(out, at, from, r.readable, maxLen);
      pushRange(out, from, to, r.readable, maxLen, true);
      at = to;
    }
    pushRange(out, at, end, r.readable, maxLen);
  }
  return out;
}

/** Two lists of page ranges, each in address order and apart from each other, as one in order. */
export function mergeRanges(a: readonly PageRange[], b: readonly PageRange[]): PageRange[] {
  const out: PageRange[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (j === b.length || (i < a.length && a[i]!.addr < b[j]!.addr)) out.push(a[i++]!);
    else out.push(b[j++]!);
  }
  return out;
}

/**
 * `ranges` (from pagesToDump(), over `vmas`) with every page holding data in the shared memory
 * objects the VMAs map (shared anonymous memory, SysV segments), whether or not the process has it
 * in its page tables: a page that only a process since exited, or one outside the dump, wrote is
 * in the object and nowhere in this process (a PostgreSQL child's writes to shared buffers, say).
 * Each object is read once per dump: `saved` holds the keys (dev:inode) of those read already.
 */
export function withSharedObjects(
  pid: number,
  vmas: readonly VmaRecord[],
  ranges: readonly PageRange[],
  maxLen: number,
  saved: Set<string>,
): PageRange[] {
  const present: Span[] = [];
  for (const r of ranges) pushSpan(present, r.addr, r.addr + BigInt(r.len));
  const extra: PageRange[] = [];
  const seen: string[] = [];
  for (const v of vmas) {
    const key = `${v.dev}:${v.inode}`;
    if (v.kind !== 'anon-shared' || v.content !== 'pages' || saved.has(key)) continue;
    seen.push(key);
    const spans: Span[] = [];
    for (const d of objectData(pid, v)) {
      const start = v.start + BigInt(alignDown(d.start) - Number(v.offset));
      const end = v.start + BigInt(alignUp(d.end) - Number(v.offset));
      pushSpan(spans, start, end);
    }
    for (const s of subtractSpans(spans, present))
      pushRange(extra, s.start, s.end, v.perms[0] === 'r', maxLen);
  }
  for (const key of seen) saved.add(key);
  return extra.length === 0 ? [...ranges] : mergeRanges(ranges, extra);
}

const alignDown = (n: number): number => n - (n % PAGE_SIZE);
const alignUp = (n: number): number => alignDown(n + PAGE_SIZE - 1);

/** The stretches of the object VMA `v` maps, within what it maps, that hold data (file offsets). */
function objectData(pid: number, v: VmaRecord): { start: number; end: number }[] {
  const name = `map_files/${v.start.toString(16)}-${v.end.toString(16)}`;
  let fd: number;
  try {
    fd = openSync(`/proc/${pid}/${name}`, 'r');
  } catch (err) {
    return procError(pid, name, err);
  }
  try {
    return dataRanges(fd, Number(v.offset), Number(v.offset + v.end - v.start));
  } finally {
    closeSync(fd);
  }
}

/** Read pages through /proc/PID/mem, which also reaches VMAs mapped without read permission. */
function readViaMem(pid: number, ranges: readonly PageRange[], buf: Buffer): void {
  let fd: number;
  try {
    fd = openSync(`/proc/${pid}/mem`, 'r');
  } catch (err) {
    return procError(pid, 'mem', err);
  }
  try {
    let off = 0;
    for (const r of ranges) {
      const got = readSync(fd, buf, off, r.len, Number(r.addr));
      if (got !== r.len)
        throw new FerryError('FERRY_PROCESS_EXITED', `process ${pid}: page 0x${r.addr.toString(16)} is gone`);
      off += r.len;
    }
  } finally {
    closeSync(fd);
  }
}

async function readWithVm(pid: number, buf: Buffer, batch: PageRange[]): Promise<number> {
  try {
    return await processVmReadvAsync(pid, buf, batch);
  } catch (err) {
    if (isErrno(err, 'EFAULT', 'ENOSYS', 'EPERM')) return 0;
    throw err;
  }
}

/**
 * Group ranges, in order, into transfers of at most `maxBytes` bytes and IOV_MAX ranges, a range
 * joining a group only when `fits` it (given the group's first range, the range and the group).
 */
function* groups<R extends RemoteRange>(
  ranges: readonly R[],
  maxBytes: number,
  fits: (first: R, r: R, group: readonly R[]) => boolean = () => true,
  bytesOf: (r: R) => number = (r) => r.len,
): Generator<R[]> {
  let group: R[] = [];
  let bytes = 0;
  for (const r of ranges) {
    const n = bytesOf(r);
    if (
      group.length > 0 &&
      (bytes + n > maxBytes || group.length === IOV_MAX || !fits(group[0]!, r, group))
    ) {
      yield group;
      group = [];
      bytes = 0;
    }
    group.push(r);
    bytes += n;
  }
  if (group.length > 0) yield group;
}

export interface CopyOptions {
  onProgress?: (doneBytes: number) => void;
  /**
   * The process is running (a pre-copy round): pages that cannot be read now (unmapped meanwhile,
   * or not readable) are left out instead of failing the copy.
   */
  running?: boolean;
  /** Hears the pages read (before they are stored): `data` holds the bytes of `ranges`, in order. */
  onCopied?: (ranges: readonly PageRange[], data: Buffer) => void;
}

/**
 * Read every range into the page store, in order, in batches as large as the store's room (one batch
 * is read while the one before is written). Returns the ranges stored with their bytes.
 */
export async function copyPages(
  pid: number,
  ranges: readonly PageRange[],
  writer: PageStoreWriter,
  options: CopyOptions = {},
): Promise<RemoteRange[]> {
  const stored: RemoteRange[] = [];
  let done = 0;
  options.onProgress?.(done);
  const toCopy = options.running ? ranges.filter((r) => r.readable) : ranges;
  const sameKind = (a: PageRange, b: PageRange): boolean => a.readable === b.readable;
  for (const batch of groups(toCopy, writer.maxRoom, sameKind, (r) => (r.earlier ? 0 : r.len))) {
    const data = batch.filter((r) => !r.earlier);
    const bytes = byteCount(data);
    const room = await writer.room(bytes);
    // What process_vm_readv cannot read (it stops at the first such range; fails with EFAULT when
    // that is the first of the batch; is missing or forbidden on some systems) goes through /proc/PID/mem.
    // On one of libuv's threads: meanwhile the batch before goes out.
    const got = batch[0]!.readable && data.length > 0 ? await readWithVm(pid, room, data) : 0;
    if (got < bytes && options.running) {
      // Whole ranges only: process_vm_readv never splits one.
      const read = head(data, got);
      options.onCopied?.(read, room);
      writer.take(read);
      stored.push(...read);
    } else {
      if (got < bytes) readViaMem(pid, tail(data, got), room.subarray(got));
      options.onCopied?.(data, room);
      writer.take(batch);
      stored.push(...data);
    }
    done += bytes;
    options.onProgress?.(done);
  }
  return stored;
}

/** The ranges that make up the first `bytes` bytes of `ranges` (a whole number of them). */
function head(ranges: readonly PageRange[], bytes: number): PageRange[] {
  const out: PageRange[] = [];
  for (let left = bytes, i = 0; left > 0 && i < ranges.length; left -= ranges[i++]!.len) out.push(ranges[i]!);
  return out;
}

/** The part of `ranges` after the first `bytes` bytes. */
function tail(ranges: readonly PageRange[], bytes: number): PageRange[] {
  const out: PageRange[] = [];
  let skip = bytes;
  for (const r of ranges) {
    if (skip >= r.len) {
      skip -= r.len;
      continue;
    }
    out.push({ addr: r.addr + BigInt(skip), len: r.len - skip, readable: r.readable });
    skip = 0;
  }
  return out;
}

/** The VMA holding `addr`, walking forward from `from` (both lists are in address order). */
function vmaIndexAt(vmas: readonly VmaRecord[], from: number, addr: bigint): number {
  let i = from;
  while (i < vmas.length && vmas[i]!.end <= addr) i++;
  if (i === vmas.length || vmas[i]!.start > addr) {
    throw new FerryError(
      'FERRY_IMAGE_CORRUPT',
      `pagemap.img: page 0x${addr.toString(16)} lies outside every VMA`,
    );
  }
  return i;
}

/** A page source cut at VMA boundaries: it lies in `vma`. */
interface SourcePiece extends PageSource {
  vma: VmaRecord;
}

/** Every page source, in order, cut where VMAs end; a page outside every VMA is an error. */
function* sourcePieces(sources: readonly PageSource[], vmas: readonly VmaRecord[]): Generator<SourcePiece> {
  let i = 0;
  for (const src of sources) {
    for (let a = src.start; a < src.end;) {
      i = vmaIndexAt(vmas, i, a);
      const vma = vmas[i]!;
      const stop = vma.end < src.end ? vma.end : src.end;
      const offset = src.layer === null ? 0 : src.offset + Number(a - src.start);
      yield { start: a, end: stop, layer: src.layer, offset, vma };
      a = stop;
    }
  }
}

/**
 * The VMAs pages will be written into: those with stored pages, and file-backed ones whose
 * copied-on-write pages were all zeros (a fresh file mapping would show the file's bytes there).
 */
export function vmasToFill(sources: readonly PageSource[], vmas: readonly VmaRecord[]): Set<VmaRecord> {
  const filled = new Set<VmaRecord>();
  for (const p of sourcePieces(sources, vmas)) if (p.layer !== null || isFileBacked(p.vma)) filled.add(p.vma);
  return filled;
}

/** Pages to copy from a layer's data: [addr, addr + len) from `offset` bytes into it. */
export interface LayerRange extends RemoteRange {
  offset: number;
}

/** Where restored pages go: per layer, stored runs in the order of their data; and zero fills. */
export interface PageWrites {
  stored: Map<number, LayerRange[]>;
  /** File-backed ranges whose pages were all zeros (fresh anonymous memory is zero already). */
  zeros: RemoteRange[];
  /** Staged anonymous memory to drop (madvise DONTNEED): it reads back as zeros. */
  clears: RemoteRange[];
  pages: number;
}

/** A run of staged pages: the data of the layer in image part `part` (null: zeros), at process addresses. */
export interface StagedRun extends Span {
  part: string | null;
}

/** Pages of each VMA a prefill (prefill.ts) moved into place: what each run holds. */
export type StagedContent = ReadonlyMap<VmaRecord, readonly StagedRun[]>;

function pageWrites(
  sources: readonly PageSource[],
  vmas: readonly VmaRecord[],
  layerParts: readonly (string | null)[],
  staged: StagedContent,
): PageWrites {
  const writes: PageWrites = { stored: new Map(), zeros: [], clears: [], pages: 0 };
  const add = (layer: number | null, start: bigint, end: bigint, offset: number): void => {
    const bytes = Number(end - start);
    for (let off = 0; off < bytes; off += PAGE_BATCH) {
      const len = Math.min(bytes - off, PAGE_BATCH);
      const addr = start + BigInt(off);
      if (layer === null) {
        writes.zeros.push({ addr, len });
      } else {
        let list = writes.stored.get(layer);
        if (!list) writes.stored.set(layer, (list = []));
        list.push({ addr, len, offset: offset + off });
      }
    }
  };
  /** Per staged VMA, the pages the image has data for. */
  const kept = new Map<VmaRecord, Span[]>();
  /**
   * Per staged VMA, the first of its runs that may still meet a piece: pieces come in address
   * order, so the walk over its runs is one pass, however scattered the pages (a search of every
   * run for every piece took seconds for a few thousand pages written at random).
   */
  const cursor = new Map<VmaRecord, number>();
  for (const p of sourcePieces(sources, vmas)) {
    const runs = staged.get(p.vma);
    if (runs) {
      if (p.layer === null) continue; // cleared below if staging put something there
      writes.pages += Number(p.end - p.start) / PAGE_SIZE;
      const spans = kept.get(p.vma) ?? [];
      pushSpan(spans, p.start, p.end);
      kept.set(p.vma, spans);
      // Pages staged from the same layer are in place already: the rest of the piece is written.
      let k = cursor.get(p.vma) ?? 0;
      while (k < runs.length && runs[k]!.end <= p.start) k++;
      cursor.set(p.vma, k);
      const part = layerParts[p.layer];
      let at = p.start;
      for (let m = k; m < runs.length && runs[m]!.start < p.end; m++) {
        const r = runs[m]!;
        if (r.part === null || r.part !== part) continue;
        if (r.start > at) add(p.layer, at, r.start, p.offset + Number(at - p.start));
        if (r.end > at) at = r.end;
      }
      if (at < p.end) add(p.layer, at, p.end, p.offset + Number(at - p.start));
      continue;
    }
    // Zero pages read back as zeros in fresh anonymous memory; file-backed VMAs need them written.
    if (p.layer === null && !isFileBacked(p.vma)) continue;
    writes.pages += Number(p.end - p.start) / PAGE_SIZE;
    add(p.layer, p.start, p.end, p.offset);
  }
  // Staged pages the image has no data for (dropped, or zero since) must read as zeros.
  for (const [vma, runs] of staged) {
    const written: Span[] = [];
    for (const r of runs) if (r.part !== null) pushSpan(written, r.start, r.end);
    for (const s of subtractSpans(written, kept.get(vma) ?? []))
      writes.clears.push({ addr: s.start, len: Number(s.end - s.start) });
  }
  return writes;
}

const byteCount = (ranges: readonly RemoteRange[]): number => ranges.reduce((n, r) => n + r.len, 0);

/** process_vm_writev of `data` over `ranges`, all of it or an error. */
function writeAll(ctx: RestoreContext, data: Buffer, ranges: readonly RemoteRange[]): void {
  const got = processVmWritev(ctx.pid, data, ranges);
  if (got !== data.length) {
    throw new FerryError(
      'FERRY_RESTORE_FAILED',
      `wrote ${got} of ${data.length} bytes of pages at 0x${ranges[0]!.addr.toString(16)}`,
    );
  }
}

/** Bytes one preadv() in the restored process reads at most (under the kernel's MAX_RW_COUNT). */
const PREADV_MAX = 1 << 30;

/**
 * The restored process reads its pages from the page file itself: preadv() straight from the page
 * cache into its memory, one call per stretch of the file, many calls to a batch, with no copy
 * through ferry.
 */
export function readPagesInProcess(
  remote: RemoteSyscalls,
  file: string,
  stored: readonly LayerRange[],
): void {
  if (stored.length === 0) return;
  const fd = remote.withData(() =>
    remote.check(`open(${file})`, NR.openat, AT_FDCWD, remote.putString(file), O.RDONLY | O.CLOEXEC, 0),
  );
  try {
    const contiguous = (_: LayerRange, r: LayerRange, group: readonly LayerRange[]): boolean =>
      group.at(-1)!.offset + group.at(-1)!.len === r.offset;
    // A range longer than one call may read (a VMA of more than 1 GiB) goes in pieces.
    const pieces = stored.flatMap((r) =>
      Array.from({ length: Math.ceil(r.len / PREADV_MAX) }, (_, k) => ({
        addr: r.addr + BigInt(k * PREADV_MAX),
        len: Math.min(PREADV_MAX, r.len - k * PREADV_MAX),
        offset: r.offset + k * PREADV_MAX,
      })),
    );
    const pending = [...groups(pieces, PREADV_MAX, contiguous)];
    while (pending.length > 0) {
      remote.withData(() => {
        const calls: RemoteCall[] = [];
        const expected: number[] = [];
        while (pending.length > 0 && pending[0]!.length * 16 <= remote.dataFree) {
          const group = pending.shift()!;
          const iov = remote.put(encodeIovecs(group));
          calls.push({
            name: `preadv(${file})`,
            nr: NR.preadv,
            args: [fd, iov, group.length, group[0]!.offset, 0],
          });
          expected.push(byteCount(group));
        }
        remote.batch(calls).forEach((got, k) => {
          if (got !== BigInt(expected[k]!)) {
            throw new FerryError(
              'FERRY_IMAGE_CORRUPT',
              `${file} ended early: read ${got} of ${expected[k]} bytes of pages`,
            );
          }
        });
      });
    }
  } finally {
    remote.check('close', NR.close, fd);
  }
}

/** Bytes one process_vm_writev of stored pages moves at most. */
const WRITE_JOB = 8 << 20;

/**
 * Write a layer's stored pages into process `pid` from the page cache: the page file is mapped
 * read-only here, and process_vm_writev (or the copier's UFFDIO_COPY) copies from the mapping into
 * the process, several calls at once on libuv's threads. Most of the time goes to the kernel
 * making fresh memory for the process, which then runs on every CPU instead of one. With `consume`
 * (a temporary image), what each call wrote is punched out of the file at once: the memory its
 * page cache held goes to the process next, instead of memory the kernel must make fresh (in a
 * virtual machine, memory unused for a while comes back from the host at a fraction of the speed).
 */
export async function writeStoredPages(
  pid: number,
  file: string,
  stored: readonly LayerRange[],
  consume = false,
  copier?: PageCopier,
): Promise<void> {
  if (stored.length === 0) return;
  const size = stored.reduce((n, r) => Math.max(n, r.offset + r.len), 0);
  const fd = openSync(file, consume ? 'r+' : 'r');
  let base: bigint;
  try {
    base = mmap(0n, size, PROT.READ, MAP.SHARED, fd, 0);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  const write = async (job: LayerRange[]): Promise<void> => {
    const rest: LayerRange[] = [];
    for (const r of job) {
      if (copier?.covers(r.addr)) await copier.copy(r.addr, base + BigInt(r.offset), r.len);
      else rest.push(r);
    }
    const local = rest.map((r) => ({ addr: base + BigInt(r.offset), len: r.len }));
    const got = rest.length > 0 ? await processVmWritevAsync(pid, local, rest) : 0;
    if (got !== byteCount(rest)) {
      throw new FerryError(
        'FERRY_RESTORE_FAILED',
        `wrote ${got} of ${byteCount(rest)} bytes of pages at 0x${rest[0]!.addr.toString(16)}`,
      );
    }
    if (consume) for (const r of job) punchHole(fd, r.offset, r.len);
  };
  try {
    // Every call is over before the mapping goes, even after a failure.
    await runAtOnce([...groups(stored, WRITE_JOB)].map((job) => () => write(job)));
  } finally {
    munmap(base, size);
    closeSync(fd);
  }
}

/** Stored bytes per run, on average, from which a VMA's pages are worth one UFFDIO_COPY each. */
const COPY_RUN = 1 << 20;

/**
 * Fills the missing pages of a restored process's private anonymous VMAs with UFFDIO_COPY, through
 * a userfaultfd made inside it (registered for missing pages, then unregistered): the kernel makes
 * each page with its bytes in it, where process_vm_writev has it zeroed first and faulted in (a
 * third less time here). Only for VMAs whose stored runs are long (one call per run); the others,
 * and every process where userfaultfd cannot be had, get process_vm_writev.
 */
export class PageCopier {
  private constructor(
    private readonly fd: number,
    /** The registered VMAs, in address order. */
    private readonly spans: readonly Span[],
  ) {}

  /**
   * A copier for the VMAs among `vmas` that `stored` (each layer's runs) fills in long runs, but
   * those in `staged` (pages there already); undefined when there are none or userfaultfd cannot be
   * had.
   */
  static open(
    ctx: RestoreContext,
    vmas: readonly VmaRecord[],
    stored: readonly (readonly LayerRange[])[],
    staged: StagedContent,
  ): PageCopier | undefined {
    const runs = new Map<VmaRecord, { bytes: number; count: number }>();
    let i = 0;
    for (const r of stored.flat().sort((a, b) => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : 0))) {
      i = vmaIndexAt(vmas, i, r.addr);
      const v = vmas[i]!;
      const n = runs.get(v) ?? { bytes: 0, count: 0 };
      n.bytes += r.len;
      n.count++;
      runs.set(v, n);
    }
    const chosen = [...runs]
      .filter(([v, n]) => isPrivateAnonymous(v) && !staged.has(v) && n.bytes >= n.count * COPY_RUN)
      .map(([v]) => ({ start: v.start, end: v.end }));
    if (chosen.length === 0) return undefined;
    let fd: number;
    try {
      fd = userfaultfdIn(ctx.remote).fd;
    } catch {
      return undefined; // no userfaultfd here (a kernel without it, a seccomp filter): process_vm_writev
    }
    try {
      uffdApi(fd, 0n);
    } catch {
      closeSync(fd);
      return undefined;
    }
    const registered: Span[] = [];
    for (const span of chosen) {
      try {
        uffdRegister(fd, span.start, span.end - span.start, 'missing');
        registered.push(span);
      } catch (err) {
        if (!isErrno(err, 'EINVAL', 'EPERM', 'EBUSY')) {
          new PageCopier(fd, registered).close();
          throw err;
        }
      }
    }
    const copier = new PageCopier(fd, registered);
    if (registered.length > 0) return copier;
    copier.close();
    return undefined;
  }

  /** Whether the page at `addr` is filled by copy(). */
  covers(addr: bigint): boolean {
    return spanAt(this.spans, addr) !== undefined;
  }

  /** Copy `len` bytes of this process's memory at `src` into the process's missing pages at `dst`. */
  copy(dst: bigint, src: bigint, len: number): Promise<void> {
    return uffdCopyAsync(this.fd, dst, src, len);
  }

  /** Unregister the VMAs (their flags as they were) and close the userfaultfd. */
  close(): void {
    try {
      for (const span of this.spans) uffdUnregister(this.fd, span.start, span.end - span.start);
    } catch {
      // The process is gone (a failed restore kills it): closing is all there is left to do.
    } finally {
      closeSync(this.fd);
    }
  }
}

/** Write a compressed layer's pages (decompressed here) through one reused buffer. */
function copyIn(
  ctx: RestoreContext,
  reader: LayerReader,
  layer: number,
  stored: readonly LayerRange[],
): void {
  const buf = Buffer.allocUnsafeSlow(PAGE_BATCH);
  for (const group of groups(stored, PAGE_BATCH)) {
    let at = 0;
    for (const r of group) {
      reader.read(layer, r.offset, r.len, buf.subarray(at, at + r.len));
      at += r.len;
    }
    writeAll(ctx, buf.subarray(0, at), group);
  }
}

/** Pages being written into a restored process. */
export interface PageRestore {
  /** How many pages are written. */
  pages: number;
  /**
   * Resolves once every page is in place: the page files' are written on libuv's threads while the
   * caller goes on with what does not touch memory.
   */
  written: Promise<void>;
  /** The pages left to come in as it runs (a lazy restore). */
  lazy?: LazyMemory;
}

/** The page files' stored runs of the layers that are not compressed: (file, runs) per layer. */
function fileWrites(image: ProcessImage, writes: PageWrites): [string, LayerRange[]][] {
  return [...writes.stored]
    .filter(([layer]) => !image.layers[layer]!.index.compressed)
    .map(([layer, stored]) => [image.layers[layer]!.file, stored]);
}

/** Write each file's runs with `copier` (where it covers them), then close it. */
async function writeFiles(
  ctx: RestoreContext,
  files: readonly [string, LayerRange[]][],
  copier: PageCopier | undefined,
): Promise<void> {
  try {
    for (const [file, stored] of files)
      await writeStoredPages(ctx.pid, file, stored, ctx.consumePages, copier);
  } finally {
    copier?.close();
  }
}

/** Pages copied in from before the rest of the layout is made (beginPageCopy). */
export interface EarlyCopy {
  /** Whether the page at `addr` is one of them. */
  covers(addr: bigint): boolean;
  written: Promise<void>;
  /** Where all the process's pages go (with nothing staged: there is no early copy after a prefill). */
  writes: PageWrites;
}

/**
 * Begin copying the stored pages of `ready`, private anonymous VMAs mapped already, with
 * UFFDIO_COPY (those PageCopier takes), while the stub's own mappings go and the other VMAs are
 * made: the main thread's remote calls leave a CPU free there. Undefined when there are none.
 */
export function beginPageCopy(
  ctx: RestoreContext,
  image: ProcessImage,
  vmas: readonly VmaRecord[],
  ready: readonly VmaRecord[],
): EarlyCopy | undefined {
  const writes = pageWrites(
    image.pages,
    vmas,
    image.layers.map((l) => l.part),
    new Map(),
  );
  // A VMA that also takes pages of a compressed layer is left to restorePages(): those are written
  // with process_vm_writev, which a missing page of a registered VMA stops.
  const withCompressed = new Set(
    [...writes.stored]
      .filter(([layer]) => image.layers[layer]!.index.compressed)
      .flatMap(([, stored]) => stored.map((r) => spanAt(ready, r.addr))),
  );
  const takes = ready.filter((v) => !withCompressed.has(v));
  const files = fileWrites(image, writes).map(([file, stored]): [string, LayerRange[]] => [
    file,
    stored.filter((r) => spanAt(takes, r.addr) !== undefined),
  ]);
  const copier = PageCopier.open(
    ctx,
    takes,
    files.map(([, stored]) => stored),
    new Map(),
  );
  if (!copier) return undefined;
  const covered = files.map(([file, stored]): [string, LayerRange[]] => [
    file,
    stored.filter((r) => copier.covers(r.addr)),
  ]);
  return { covers: (addr) => copier.covers(addr), written: writeFiles(ctx, covered, copier), writes };
}

/**
 * The memory that comes in as the process runs: the VMAs whose pages a migration's source sends
 * then (content `remote`), and with `lazyImage`, the pages a lazy restore takes out of `writes`:
 * those of VMAs lazyCapable() (not staged) whose pages are all in uncompressed layers, mapped here
 * to be copied from. Undefined when there is none.
 */
function takeLazy(
  ctx: RestoreContext,
  image: ProcessImage,
  vmas: readonly VmaRecord[],
  writes: PageWrites,
  staged: StagedContent,
  lazyImage: boolean,
  eager: readonly Span[],
): LazyMemory | undefined {
  const compressedIn = new Set(
    [...writes.stored]
      .filter(([layer]) => image.layers[layer]!.index.compressed)
      .flatMap(([, stored]) => stored.map((r) => spanAt(vmas, r.addr))),
  );
  const lazy = vmas.filter(
    (v) => v.content === 'remote' || (lazyImage && lazyCapable(v) && !staged.has(v) && !compressedIn.has(v)),
  );
  const runs: Run[] = [];
  const data: MappedData[] = [];
  try {
    for (const [layer, stored] of writes.stored) {
      const taken: LayerRange[] = [];
      const kept: LayerRange[] = [];
      for (const r of stored) {
        if (spanAt(lazy, r.addr) === undefined) {
          kept.push(r);
          continue;
        }
        // The pages the restore writes into itself go in at once; the others as the process runs.
        const span = { start: r.addr, end: r.addr + BigInt(r.len) };
        const piece = (s: Span): LayerRange => ({
          addr: s.start,
          len: Number(s.end - s.start),
          offset: r.offset + Number(s.start - r.addr),
        });
        kept.push(...intersectSpans([span], eager).map(piece));
        taken.push(...subtractSpans([span], eager).map(piece));
      }
      if (taken.length === 0) continue;
      writes.stored.set(layer, kept);
      data.push(
        mapFile(
          image.layers[layer]!.file,
          taken.reduce((n, r) => Math.max(n, r.offset + r.len), 0),
        ),
      );
      const base = data.at(-1)!.base;
      for (const r of taken)
        runs.push({ start: r.addr, end: r.addr + BigInt(r.len), src: base + BigInt(r.offset) });
    }
  } catch (err) {
    data.forEach(unmapData);
    throw err;
  }
  runs.sort((a, b) => (a.start < b.start ? -1 : 1));
  const filling = new Set(runs.map((r) => spanAt(lazy, r.start)!));
  const registered = lazy.filter((v) => v.content === 'remote' || filling.has(v));
  if (registered.length === 0) return undefined;
  return LazyMemory.open(
    ctx.remote,
    registered.map((v) => ({ start: v.start, end: v.end })),
    runs,
    data,
  );
}

/**
 * Write the stored pages back into the restored process (but those `early` copies in). Those of
 * VMAs a migration's source sends later, and with `lazy` those of its anonymous memory, are left
 * to come in as it runs (LazyMemory), but for the pages in `eager`.
 */
export function restorePages(
  ctx: RestoreContext,
  image: ProcessImage,
  vmas: readonly VmaRecord[],
  staged: StagedContent = new Map(),
  early?: EarlyCopy,
  lazy = false,
  eager: readonly Span[] = [],
): PageRestore {
  const writes =
    early?.writes ??
    pageWrites(
      image.pages,
      vmas,
      image.layers.map((l) => l.part),
      staged,
    );
  const lazyMemory = takeLazy(ctx, image, vmas, writes, staged, lazy, eager);
  ctx.remote.batch(
    writes.clears.map((r) => ({
      name: `madvise(0x${r.addr.toString(16)}, DONTNEED)`,
      nr: NR.madvise,
      args: [r.addr, r.len, MADV.DONTNEED],
    })),
  );
  if (writes.zeros.length > 0) {
    const zeros = Buffer.alloc(PAGE_BATCH);
    for (const group of groups(writes.zeros, PAGE_BATCH))
      writeAll(ctx, zeros.subarray(0, byteCount(group)), group);
  }
  const reader = new LayerReader(image.layers);
  try {
    for (const [layer, stored] of writes.stored)
      if (image.layers[layer]!.index.compressed) copyIn(ctx, reader, layer, stored);
  } finally {
    reader.close();
  }
  const files = fileWrites(image, writes).map(([file, stored]): [string, LayerRange[]] => [
    file,
    early ? stored.filter((r) => !early.covers(r.addr)) : stored,
  ]);
  // Once the synchronous writes are over: a missing page of a registered VMA can only be copied in.
  const copier = PageCopier.open(
    ctx,
    vmas,
    files.map(([, stored]) => stored),
    staged,
  );
  const rest = writeFiles(ctx, files, copier);
  return {
    pages: writes.pages,
    written: early ? allWritten([early.written, rest]) : rest,
    lazy: lazyMemory,
  };
}

/** Resolves once every one of `writes` is over; then rejects with the first failure, if any. */
async function allWritten(writes: readonly Promise<void>[]): Promise<void> {
  for (const outcome of await Promise.allSettled(writes))
    if (outcome.status === 'rejected') throw outcome.reason;
}
