// Page contents. Dump: find the pages a checkpoint stores (vma/usage.ts dumpsPage), read them with
// process_vm_readv in large batches (/proc/PID/mem where a VMA is not readable), hand them on in
// address order. Restore: write them back with process_vm_writev in batches of the same size.
import { closeSync, openSync, readSync } from 'node:fs';
import { FerryError } from '../errors.js';
import type { PageIndex } from '../image/page-index.js';
import type { PageStoreReader, PageStoreWriter } from '../image/page-store.js';
import { procError } from '../proc/files.js';
import { isErrno } from '../sys/errno.js';
import { PAGE_SIZE } from '../proc/pagemap.js';
import { IOV_MAX, processVmReadv, processVmWritev, type RemoteRange } from '../sys/process-vm.js';
import { openPageScanner } from '../vma/pages.js';
import { contiguousRanges, dumpsPage } from '../vma/usage.js';
import type { DumpContext, RestoreContext } from './context.js';
import type { VmaRecord } from './mem-vmas.js';

/** Bytes moved per process_vm_readv/writev call. */
const CHUNK = 16 << 20;
const PAGE = BigInt(PAGE_SIZE);

export interface PageRange extends RemoteRange {
  /** The VMA can be read with process_vm_readv (it is mapped readable). */
  readable: boolean;
}

/** The ranges of pages a checkpoint stores, in address order, none longer than CHUNK. */
export function pagesToDump(pid: number, vmas: readonly VmaRecord[]): PageRange[] {
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
          if (dumpsPage(vma, run.flags)) pushRange(ranges, start, end, vma.perms[0] === 'r');
          start = end;
        }
      });
    }
  } finally {
    scanner.close();
  }
  return ranges;
}

function pushRange(ranges: PageRange[], start: bigint, end: bigint, readable: boolean): void {
  for (let a = start; a < end; a += BigInt(CHUNK)) {
    const len = Number(end - a < BigInt(CHUNK) ? end - a : BigInt(CHUNK));
    const last = ranges.at(-1);
    if (last && last.readable === readable && last.addr + BigInt(last.len) === a && last.len + len <= CHUNK) {
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

/** Group ranges into reads of at most CHUNK bytes and IOV_MAX ranges. */
function* batches(ranges: readonly PageRange[]): Generator<PageRange[]> {
  let batch: PageRange[] = [];
  let bytes = 0;
  for (const r of ranges) {
    if (
      batch.length > 0 &&
      (bytes + r.len > CHUNK || batch.length === IOV_MAX || batch[0]!.readable !== r.readable)
    ) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(r);
    bytes += r.len;
  }
  if (batch.length > 0) yield batch;
}

/** Buffers a dump reads pages into; each is reused once the bytes in it are written. */
const POOL = 4;

export interface CopyHooks {
  onProgress?: (doneBytes: number) => void;
  /** Called once every page has been read: the process need not stay frozen for the writing. */
  onAllRead?: () => void;
}

/**
 * Read every range into the page store, in order, while writes of what was read before go on in
 * the thread pool: reading (this thread) and writing (another) overlap, and a few reused buffers
 * serve any size (fresh memory is slow to fault in, most of all in a virtual machine).
 */
export async function copyPages(
  ctx: DumpContext,
  ranges: readonly PageRange[],
  writer: PageStoreWriter,
  hooks: CopyHooks = {},
): Promise<void> {
  const free: Buffer[] = [];
  const waiting: (() => void)[] = [];
  let allocated = 0;
  const acquire = async (): Promise<Buffer> => {
    if (free.length === 0 && allocated < POOL) {
      allocated++;
      return Buffer.allocUnsafeSlow(CHUNK);
    }
    while (free.length === 0) await new Promise<void>((resolve) => waiting.push(resolve));
    return free.pop()!;
  };
  const release = (buf: Buffer): void => {
    free.push(buf);
    waiting.shift()?.();
  };
  const writes: Promise<void>[] = [];
  let done = 0;
  hooks.onProgress?.(done);
  for (const batch of batches(ranges)) {
    const bytes = batch.reduce((n, r) => n + r.len, 0);
    const buf = await acquire();
    // What process_vm_readv cannot read (it stops at the first such range; fails with EFAULT when
    // that is the first of the batch; is missing or forbidden on some systems) goes through /proc/PID/mem.
    const got = batch[0]!.readable ? readWithVm(ctx.pid, buf.subarray(0, bytes), batch) : 0;
    if (got < bytes) readViaMem(ctx.pid, tail(batch, got), buf.subarray(got, bytes));
    let off = 0;
    const written = batch.map((r) => {
      const data = buf.subarray(off, (off += r.len));
      return writer.add(r.addr, data);
    });
    const settled = Promise.all(written).finally(() => release(buf));
    settled.catch(() => {}); // awaited below; do not let a failure go unhandled meanwhile
    writes.push(settled.then(() => undefined));
    done += bytes;
    hooks.onProgress?.(done);
  }
  hooks.onAllRead?.();
  await Promise.all(writes);
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

/**
 * The VMAs pages will be written into: those with stored pages, and file-backed ones whose
 * copied-on-write pages were all zeros (a fresh file mapping would show the file's bytes there).
 */
export function vmasToFill(index: PageIndex, vmas: readonly VmaRecord[]): Set<VmaRecord> {
  const filled = new Set<VmaRecord>();
  let i = 0;
  for (const e of index.entries) {
    for (let a = e.addr, end = e.addr + BigInt(e.pages) * PAGE; a < end;) {
      i = vmaIndexAt(vmas, i, a);
      const v = vmas[i]!;
      if (!e.zero || isFileBacked(v)) filled.add(v);
      a = v.end < end ? v.end : end;
    }
  }
  return filled;
}

/** Write the stored pages back into the restored process; returns how many pages were written. */
export function restorePages(
  ctx: RestoreContext,
  reader: PageStoreReader,
  vmas: readonly VmaRecord[],
): number {
  const zeros = Buffer.alloc(CHUNK);
  let pending: RemoteRange[] = [];
  let pendingBytes = 0;
  let written = 0;
  const flush = (data: Buffer): void => {
    const got = processVmWritev(ctx.pid, data, pending);
    if (got !== data.length) {
      throw new FerryError(
        'FERRY_RESTORE_FAILED',
        `wrote ${got} of ${data.length} bytes of pages at 0x${pending[0]!.addr.toString(16)}`,
      );
    }
    written += data.length / PAGE_SIZE;
    pending = [];
    pendingBytes = 0;
  };
  // Stored pages follow each other in pages.img: read a batch of them in one go.
  const flushStored = (): void => {
    if (pending.length > 0) flush(reader.read(pendingBytes));
  };
  let i = 0;
  for (const e of reader.index.entries) {
    const bytes = e.pages * PAGE_SIZE;
    if (e.zero) {
      // Zero pages read back as zeros in fresh anonymous memory; file-backed VMAs need them written.
      flushStored();
      for (let a = e.addr, end = e.addr + BigInt(bytes); a < end;) {
        i = vmaIndexAt(vmas, i, a);
        const v = vmas[i]!;
        const stop = v.end < end ? v.end : end;
        if (isFileBacked(v)) {
          for (let z = a; z < stop; z += BigInt(CHUNK)) {
            const len = Number(stop - z < BigInt(CHUNK) ? stop - z : BigInt(CHUNK));
            pending = [{ addr: z, len }];
            flush(zeros.subarray(0, len));
          }
        }
        a = stop;
      }
      continue;
    }
    for (let off = 0; off < bytes;) {
      const len = Math.min(bytes - off, CHUNK);
      if (pendingBytes + len > CHUNK || pending.length === IOV_MAX) flushStored();
      pending.push({ addr: e.addr + BigInt(off), len });
      pendingBytes += len;
      off += len;
    }
  }
  flushStored();
  return written;
}
