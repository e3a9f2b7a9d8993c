// Page contents. Dump: find the pages a checkpoint stores (vma/usage.ts dumpsPage), read them with
// process_vm_readv in large batches (/proc/PID/mem where a VMA is not readable), hand them on in
// address order. Restore: the restored process reads them from the page file itself (preadv), or,
// from a compressed image, ferry writes them in with process_vm_writev.
import { closeSync, openSync, readSync } from 'node:fs';
import { FerryError } from '../errors.js';
import type { PageIndex } from '../image/page-index.js';
import type { PageStoreReader, PageStoreWriter } from '../image/page-store.js';
import type { Image } from '../read-image.js';
import { procError } from '../proc/files.js';
import { isErrno } from '../sys/errno.js';
import { PAGE_SIZE } from '../proc/pagemap.js';
import { AT_FDCWD, O } from '../sys/fcntl.js';
import { NR } from '../sys/nr.js';
import {
  encodeIovecs,
  IOV_MAX,
  processVmReadv,
  processVmWritev,
  type RemoteRange,
} from '../sys/process-vm.js';
import type { RemoteCall } from '../tracee/remote.js';
import { openPageScanner } from '../vma/pages.js';
import { contiguousRanges, dumpsPage } from '../vma/usage.js';
import type { DumpContext, RestoreContext } from './context.js';
import type { VmaRecord } from './mem-vmas.js';

/** Bytes moved per process_vm_writev or preadv batch at restore. */
export const PAGE_BATCH = 16 << 20;
/**
 * Bytes read per process_vm_readv at dump: small, so that writing one batch out overlaps reading the
 * next, and the two staging buffers cost little to make.
 */
export const DUMP_BATCH = 4 << 20;
const PAGE = BigInt(PAGE_SIZE);

export interface PageRange extends RemoteRange {
  /** The VMA can be read with process_vm_readv (it is mapped readable). */
  readable: boolean;
}

/** The ranges of pages a checkpoint stores, in address order, none longer than `maxLen` bytes. */
export function pagesToDump(pid: number, vmas: readonly VmaRecord[], maxLen: number): PageRange[] {
  const ranges: PageRange[] = [];
  const scanner = openPageScanner(pid);
  try {
    let i = 0;
    for (const span of contiguousRanges(vmas)) {
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

function pushRange(ranges: PageRange[], start: bigint, end: bigint, readable: boolean, maxLen: number): void {
  for (let a = start; a < end; a += BigInt(maxLen)) {
    const len = Number(end - a < BigInt(maxLen) ? end - a : BigInt(maxLen));
    const last = ranges.at(-1);
    if (
      last &&
      last.readable === readable &&
      last.addr + BigInt(last.len) === a &&
      last.len + len <= maxLen
    ) {
      last.len += len;
    } else {
      ranges.push({ addr: a, len, readable });
    }
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

function readWithVm(pid: number, buf: Buffer, batch: PageRange[]): number {
  try {
    return processVmReadv(pid, buf, batch);
  } catch (err) {
    if (isErrno(err, 'EFAULT', 'ENOSYS', 'EPERM')) return 0;
    throw err;
  }
}

/**
 * Group ranges, in order, into transfers of at most `maxBytes` bytes and IOV_MAX ranges, each
 * group's ranges alike by `alike` (the first's).
 */
function* groups<R extends RemoteRange>(
  ranges: readonly R[],
  maxBytes: number,
  alike: (a: R, b: R) => boolean = () => true,
): Generator<R[]> {
  let group: R[] = [];
  let bytes = 0;
  for (const r of ranges) {
    if (group.length > 0 && (bytes + r.len > maxBytes || group.length === IOV_MAX || !alike(group[0]!, r))) {
      yield group;
      group = [];
      bytes = 0;
    }
    group.push(r);
    bytes += r.len;
  }
  if (group.length > 0) yield group;
}

export interface CopyHooks {
  onProgress?: (doneBytes: number) => void;
}

/**
 * Read every range into the page store, in order, in batches as large as the store's room (one batch
 * is read while the one before is written).
 */
export async function copyPages(
  ctx: DumpContext,
  ranges: readonly PageRange[],
  writer: PageStoreWriter,
  hooks: CopyHooks = {},
): Promise<void> {
  let done = 0;
  hooks.onProgress?.(done);
  for (const batch of groups(ranges, writer.maxRoom, (a, b) => a.readable === b.readable)) {
    const bytes = byteCount(batch);
    const room = await writer.room(bytes);
    // What process_vm_readv cannot read (it stops at the first such range; fails with EFAULT when
    // that is the first of the batch; is missing or forbidden on some systems) goes through /proc/PID/mem.
    const got = batch[0]!.readable ? readWithVm(ctx.pid, room, batch) : 0;
    if (got < bytes) readViaMem(ctx.pid, tail(batch, got), room.subarray(got));
    writer.take(batch);
    done += bytes;
    hooks.onProgress?.(done);
  }
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

const isFileBacked = (v: VmaRecord): boolean => v.name.startsWith('/') && v.kind !== 'anon-shared';

/** A run of the page index cut at VMA boundaries: [start, stop) lies in `vma`. */
interface IndexPiece {
  start: bigint;
  stop: bigint;
  zero: boolean;
  vma: VmaRecord;
}

/** Every run of the index, in order, cut where VMAs end; a page outside every VMA is an error. */
function* indexPieces(index: PageIndex, vmas: readonly VmaRecord[]): Generator<IndexPiece> {
  let i = 0;
  for (const e of index.entries) {
    for (let a = e.addr, end = e.addr + BigInt(e.pages) * PAGE; a < end;) {
      i = vmaIndexAt(vmas, i, a);
      const vma = vmas[i]!;
      const stop = vma.end < end ? vma.end : end;
      yield { start: a, stop, zero: e.zero, vma };
      a = stop;
    }
  }
}

/**
 * The VMAs pages will be written into: those with stored pages, and file-backed ones whose
 * copied-on-write pages were all zeros (a fresh file mapping would show the file's bytes there).
 */
export function vmasToFill(index: PageIndex, vmas: readonly VmaRecord[]): Set<VmaRecord> {
  const filled = new Set<VmaRecord>();
  for (const p of indexPieces(index, vmas)) if (!p.zero || isFileBacked(p.vma)) filled.add(p.vma);
  return filled;
}

/** Where restored pages go: stored runs in the order of their data in pages.img, and zero fills. */
interface PageWrites {
  stored: RemoteRange[];
  /** File-backed ranges whose pages were all zeros (fresh anonymous memory is zero already). */
  zeros: RemoteRange[];
  pages: number;
}

/** Split [addr, addr + bytes) into ranges of at most PAGE_BATCH bytes onto `out`. */
function pushChunks(out: RemoteRange[], addr: bigint, bytes: number): void {
  for (let off = 0; off < bytes; off += PAGE_BATCH)
    out.push({ addr: addr + BigInt(off), len: Math.min(bytes - off, PAGE_BATCH) });
}

function pageWrites(index: PageIndex, vmas: readonly VmaRecord[]): PageWrites {
  const writes: PageWrites = { stored: [], zeros: [], pages: 0 };
  for (const p of indexPieces(index, vmas)) {
    // Zero pages read back as zeros in fresh anonymous memory; file-backed VMAs need them written.
    if (p.zero && !isFileBacked(p.vma)) continue;
    pushChunks(p.zero ? writes.zeros : writes.stored, p.start, Number(p.stop - p.start));
    writes.pages += Number((p.stop - p.start) / PAGE);
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
 * cache into its memory, many calls to a batch, with no copy through ferry.
 */
function readInProcess(ctx: RestoreContext, file: string, stored: readonly RemoteRange[]): void {
  const remote = ctx.remote;
  const fd = remote.withData(() =>
    remote.check(`open(${file})`, NR.openat, AT_FDCWD, remote.putString(file), O.RDONLY | O.CLOEXEC, 0),
  );
  try {
    const pending = [...groups(stored, PREADV_MAX)];
    let offset = 0;
    while (pending.length > 0) {
      remote.withData(() => {
        const calls: RemoteCall[] = [];
        const expected: number[] = [];
        while (pending.length > 0 && pending[0]!.length * 16 <= remote.dataFree) {
          const group = pending.shift()!;
          const bytes = byteCount(group);
          const iov = remote.put(encodeIovecs(group));
          calls.push({ name: `preadv(${file})`, nr: NR.preadv, args: [fd, iov, group.length, offset, 0] });
          expected.push(bytes);
          offset += bytes;
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

/** Write the stored pages from `reader` (decompressed here when need be) through one reused buffer. */
function copyIn(ctx: RestoreContext, reader: PageStoreReader, stored: readonly RemoteRange[]): void {
  const buf = Buffer.allocUnsafeSlow(PAGE_BATCH);
  for (const group of groups(stored, PAGE_BATCH)) {
    const bytes = byteCount(group);
    writeAll(ctx, reader.read(bytes, buf.subarray(0, bytes)), group);
  }
}

/** Write the stored pages back into the restored process; returns how many pages were written. */
export function restorePages(ctx: RestoreContext, image: Image, vmas: readonly VmaRecord[]): number {
  const writes = pageWrites(image.index, vmas);
  if (writes.zeros.length > 0) {
    const zeros = Buffer.alloc(PAGE_BATCH);
    for (const group of groups(writes.zeros, PAGE_BATCH))
      writeAll(ctx, zeros.subarray(0, byteCount(group)), group);
  }
  if (!image.index.compressed) {
    readInProcess(ctx, image.source.partFile('pages.img'), writes.stored);
  } else {
    const reader = image.openPages();
    try {
      copyIn(ctx, reader, writes.stored);
    } finally {
      reader.close();
    }
  }
  return writes.pages;
}
