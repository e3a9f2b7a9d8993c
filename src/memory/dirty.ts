// Dirty-page tracking, for pre-copy migration and incremental dumps: which pages a process wrote
// since a point in time. A userfaultfd in async write-protect mode is made inside the frozen process
// by a remote syscall, taken out with pidfd_getfd (the process keeps no descriptor of it) and
// registered over the process's private anonymous VMAs. A write to a protected page then only
// clears the page's protection, in the kernel, without waking anyone; PAGEMAP_SCAN reports the
// pages written (PAGE_IS_WRITTEN) and write-protects them again in the same walk. Closing the
// tracker's descriptor unregisters it all.
import { closeSync, readlinkSync, writeFileSync } from 'node:fs';
import { FerryError } from '../errors.js';
import { isErrno } from '../sys/errno.js';
import { copyFd } from '../sys/pidfd.js';
import { O } from '../sys/fcntl.js';
import { UFFD_FEATURE, uffdApi, uffdRegister, uffdWriteProtect } from '../sys/uffd.js';
import type { PartSummary } from '../image/sink.js';
import type { LayerRecord, ParentRecord } from '../image/manifest.js';
import type { RemoteSyscalls } from '../tracee/remote.js';
import {
  kernelTracksSoftDirty,
  openPageScanner,
  openPresentWrittenScanner,
  openSoftDirtyScanner,
  walkPresentWritten,
  openWrittenScanner,
  PAGE,
  type PageRun,
  type PageScanner,
} from '../vma/pages.js';
import { listProcDir, readProcLink, readProcText } from '../proc/files.js';
import { parseFdinfo } from '../proc/fdinfo.js';
import { parseStatus } from '../proc/status.js';
import { Tracee } from '../tracee/tracee.js';
import { pageHash } from '../image/hash.js';
import { PAGE_SIZE } from '../proc/pagemap.js';
import { processVmReadv } from '../sys/process-vm.js';
import { intersectSpans, mergeSpans, pushSpan, subtractSpans, type Span } from '../vma/spans.js';
import { markEarlier, mergeRanges, pagesToDump, type PageRange } from './pages.js';
import { userfaultfdIn } from './userfaultfd.js';
import type { Vma, VmaKind } from '../vma/vma.js';
import { now } from '../timings.js';

/** Kinds of VMA whose writes are tracked: private memory (anonymous, or a program's data). */
const TRACKED_KINDS = new Set<VmaKind>(['bss', 'heap', 'stack', 'anon', 'data']);
/** The VmFlags mnemonic (smaps) of a VMA registered for userfaultfd write-protection. */
const UFFD_WP_FLAG = 'uw';

/** The tracked kinds of VMA, private. */
const trackable = (v: Pick<Vma, 'perms' | 'kind'>): boolean =>
  v.perms[3] === 'p' && TRACKED_KINDS.has(v.kind);

type TrackedVma = Pick<Vma, 'start' | 'end' | 'vmFlags' | 'perms' | 'kind'>;

/**
 * What knows which pages a process wrote since they were last copied: DirtyTracker (userfaultfd
 * write-protection), else SoftDirtyTracker (the kernel's soft-dirty bits), else HashTracker (page
 * hashes).
 */
export interface WriteTracker {
  readonly method: 'uffd-wp-async' | 'soft-dirty' | 'page-hashes';
  /** Milliseconds the tracker itself held the process frozen (soft-dirty: each protecting scan). */
  readonly frozenMs?: number;
  /** Whether it watches the writes to VMA `v`. */
  tracks(v: TrackedVma): boolean;
  /**
   * A scanner of the pages written since they were last copied (or protected); `protect`: what it
   * reports counts as seen.
   */
  scanner(protect: boolean): PageScanner;
  /** The written pages in `spans`, as spans. */
  written(spans: readonly Span[], protect: boolean): Span[];
  /**
   * A scanner of the present and swapped pages of tracked VMAs that flags the written ones
   * (PAGE.WRITTEN) and protects them again, in one walk; undefined where the tracker has none.
   */
  presentScanner?(): PageScanner;
  /** presentScanner()'s walk of `spans` started now, beside other work (walkPresentWritten()). */
  presentWalk?(spans: readonly Span[]): Promise<PageScanner>;
  /** Pages were copied: `data` holds the bytes of `ranges`, in order. */
  copied(ranges: readonly { addr: bigint; len: number }[], data: Buffer): void;
  /** Every page in `spans` was just copied, the process frozen: from now on each counts as unchanged. */
  restart(spans: readonly Span[]): void;
  close(): void;
}

/** The spans of the VMAs `tracker` watches, merged where they touch. */
export function trackedSpans(tracker: WriteTracker, vmas: readonly TrackedVma[]): Span[] {
  return mergeSpans(vmas.filter((v) => tracker.tracks(v)));
}

/**
 * The kernel's soft-dirty bits (CONFIG_MEM_SOFT_DIRTY), where userfaultfd cannot track writes (Linux
 * before 6.7): the kernel sets a page's bit when it is written (new memory carries it too), and
 * writing 4 to /proc/PID/clear_refs clears every bit of the process. Clearing is the whole
 * process's, apart from the reading of the bits: a page written between the two would be lost, so
 * the process is frozen from a protecting scan's start to the clearing after it (as CRIU's
 * pre-dump does). Until that first clearing, every present page counts as written.
 */
export class SoftDirtyTracker implements WriteTracker {
  readonly method = 'soft-dirty';
  frozenMs = 0;
  /** No clearing yet: the bits say nothing of what was copied. */
  private fresh = true;

  constructor(readonly pid: number) {
    if (!kernelTracksSoftDirty())
      throw new FerryError(
        'FERRY_UNSUPPORTED',
        'soft-dirty tracking needs a kernel built with CONFIG_MEM_SOFT_DIRTY (see ferry check)',
      );
  }

  tracks(v: TrackedVma): boolean {
    return trackable(v);
  }

  /** Every present page until the first clearing, then the soft-dirty ones. */
  private open(): PageScanner {
    return this.fresh ? openPageScanner(this.pid) : openSoftDirtyScanner(this.pid);
  }

  scanner(protect: boolean): PageScanner {
    if (!protect) return this.open();
    // Frozen by ferry already (a dump's frozen copy), or frozen here until the bits are cleared.
    const status = parseStatus(readProcText(this.pid, 'status'), `/proc/${this.pid}/status`);
    const held = status.tracerPid === process.pid ? undefined : Tracee.freeze(this.pid);
    const frozenAt = now();
    let inner: PageScanner;
    try {
      inner = this.open();
    } catch (err) {
      held?.release();
      throw err;
    }
    let failed = false;
    return {
      method: inner.method,
      scan: (range, onRun) => {
        try {
          inner.scan(range, onRun);
        } catch (err) {
          failed = true; // the bits stay: what was not reported is not taken for copied
          throw err;
        }
      },
      close: () => {
        try {
          inner.close();
          if (!failed) this.clear();
        } finally {
          if (held) {
            held.release();
            this.frozenMs += now() - frozenAt;
          }
        }
      },
    };
  }

  written(spans: readonly Span[], protect: boolean): Span[] {
    return spansOfScan(this.scanner(protect), spans);
  }

  /** Protection, not copies, tells what changed. */
  copied(): void {}

  /** The process is frozen, every page just copied. */
  restart(): void {
    this.clear();
  }

  /** Nothing of the tracker is in the process or in ferry. */
  close(): void {}

  private clear(): void {
    try {
      writeFileSync(`/proc/${this.pid}/clear_refs`, '4');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ESRCH')
        throw new FerryError('FERRY_PROCESS_EXITED', `process ${this.pid} exited`, { cause: err });
      throw err;
    }
    this.fresh = false;
  }
}

function spansOfScan(scanner: PageScanner, spans: readonly Span[]): Span[] {
  const out: Span[] = [];
  try {
    for (const s of spans) scanner.scan(s, (run) => pushSpan(out, run.start, run.end));
  } finally {
    scanner.close();
  }
  return out;
}

export class DirtyTracker implements WriteTracker {
  readonly method = 'uffd-wp-async';
  private closed = false;

  private constructor(
    readonly pid: number,
    private readonly fd: number,
    /** The descriptor the process itself holds (dump --track-mem), which keeps tracking on after ferry. */
    readonly inProcessFd: number | undefined,
  ) {}

  /**
   * Start tracking writes to the private VMAs among `vmas` of the process frozen behind `remote`.
   * Every page present now counts as written until the first scan that protects it. With
   * `keepInProcess` the process keeps a descriptor of the tracker (`inProcessFd`).
   */
  static start(remote: RemoteSyscalls, vmas: readonly Vma[], keepInProcess = false): DirtyTracker {
    const { fd, inProcess } = userfaultfdIn(remote, { keep: keepInProcess });
    const tracker = new DirtyTracker(remote.pid, fd, inProcess);
    try {
      const wanted = UFFD_FEATURE.WP_ASYNC | UFFD_FEATURE.WP_UNPOPULATED;
      try {
        uffdApi(fd, wanted);
      } catch (err) {
        throw new FerryError(
          'FERRY_UNSUPPORTED',
          'dirty-page tracking needs userfaultfd write-protection in async mode (Linux 6.7+; see ferry check)',
          { cause: err },
        );
      }
      for (const v of vmas) {
        if (!trackable(v)) continue;
        try {
          uffdRegister(fd, v.start, v.end - v.start, 'wp');
        } catch (err) {
          // A VMA that cannot be registered stays untracked: its pages are all sent at the end.
          if (!isErrno(err, 'EINVAL', 'EPERM', 'EBUSY')) throw err;
        }
      }
    } catch (err) {
      tracker.close();
      throw err;
    }
    return tracker;
  }

  /** The tracker a process holds as descriptor `fd` (left by an earlier dump --track-mem). */
  static adopt(pid: number, fd: number): DirtyTracker {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      target = 'nothing';
    }
    if (target !== 'anon_inode:[userfaultfd]') {
      throw new FerryError(
        'FERRY_TRACKING_LOST',
        `process ${pid}'s dirty-page tracker (fd ${fd}) is gone (the fd is ${target}): dump with --track-mem and without --parent to start again`,
      );
    }
    return new DirtyTracker(pid, copyFd(pid, fd), fd);
  }

  /**
   * A scanner reporting the pages written since they were last protected; with `protect`, each
   * page it reports is protected again (so the next scan reports only later writes).
   */
  scanner(protect: boolean): PageScanner {
    return openWrittenScanner(this.pid, protect);
  }

  /** The written pages in `spans`, as spans; with `protect`, protected again. */
  written(spans: readonly Span[], protect: boolean): Span[] {
    return spansOfScan(this.scanner(protect), spans);
  }

  presentScanner(): PageScanner {
    return openPresentWrittenScanner(this.pid);
  }

  presentWalk(spans: readonly Span[]): Promise<PageScanner> {
    return walkPresentWritten(this.pid, spans);
  }

  /** The VMAs registered for write-protection (smaps shows 'uw'). */
  tracks(v: TrackedVma): boolean {
    return v.vmFlags.includes(UFFD_WP_FLAG);
  }

  /** Protection, not copies, tells what changed. */
  copied(): void {}

  restart(spans: readonly Span[]): void {
    this.written(spans, true);
  }

  /** ferry's descriptor of the tracker. */
  get descriptor(): number {
    return this.fd;
  }

  /**
   * Stop tracking: the process's VMAs are unregistered as the descriptor closes (unless the process
   * holds one too). Idempotent.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}

/** ferry's tracker as a process holds it: a userfaultfd with these features, opened with these flags. */
const TRACKER_FEATURES = UFFD_FEATURE.WP_ASYNC | UFFD_FEATURE.WP_UNPOPULATED;
const TRACKER_FLAGS = O.CLOEXEC | O.NONBLOCK;

/**
 * The descriptor of ferry's dirty-page tracker that process `pid` holds (dump --track-mem), found
 * from the process itself: a userfaultfd in async write-protect mode (its fdinfo's API line) opened
 * close-on-exec and non-blocking, as ferry makes one. Undefined if it holds none.
 */
export function findTracker(pid: number): number | undefined {
  for (const name of listProcDir(pid, 'fd')) {
    try {
      if (readProcLink(pid, `fd/${name}`) !== 'anon_inode:[userfaultfd]') continue;
      const info = parseFdinfo(readProcText(pid, `fdinfo/${name}`));
      const features = BigInt(`0x${/^aa:([0-9a-f]+):/.exec(info.fields.API ?? '')?.[1] ?? '0'}`);
      const flags = info.flags & ~O.ACCMODE & ~O.LARGEFILE;
      if ((features & TRACKER_FEATURES) === TRACKER_FEATURES && flags === TRACKER_FLAGS) return Number(name);
    } catch {
      // closed meanwhile
    }
  }
  return undefined;
}

/** A scanner like `inner` that also notes, in `seen`, the runs `written` says were written. */
function noting(inner: PageScanner, seen: Span[], written: (run: PageRun) => boolean): PageScanner {
  return {
    method: inner.method,
    scan: (range, onRun) =>
      inner.scan(range, (run) => {
        if (written(run)) seen.push({ start: run.start, end: run.end });
        onRun(run);
      }),
    close: () => inner.close(),
  };
}

/**
 * The tracker a process keeps for its incremental dumps (dump --track-mem), lent to the pre-copy of
 * another dump, which could not register one of its own over the same memory. Its rounds protect
 * the pages they copy, which would hide from the next incremental dump what the process wrote
 * since the image its tracking started from: so every page the loan finds written is protected no
 * more when it ends (a page not protected counts as written), and the next incremental dump stores
 * it. Its first protecting scan reports every present page, as a new tracker's does.
 */
export class LentTracker implements WriteTracker {
  readonly method = 'uffd-wp-async';
  /** Pages found written during the loan. */
  private readonly seen: Span[] = [];
  private first = true;

  private constructor(
    readonly pid: number,
    private readonly inner: DirtyTracker,
  ) {}

  /** Borrow the tracker process `pid` holds as descriptor `fd`. */
  static lend(pid: number, fd: number): LentTracker {
    return new LentTracker(pid, DirtyTracker.adopt(pid, fd));
  }

  tracks(v: TrackedVma): boolean {
    return this.inner.tracks(v);
  }

  scanner(protect: boolean): PageScanner {
    if (!protect) return this.inner.scanner(false);
    const written = noting(this.inner.scanner(true), this.seen, () => true);
    if (!this.first) return written;
    this.first = false;
    // Every present page, for a first copy of all of them; the written ones noted and protected first.
    const present = openPageScanner(this.pid);
    return {
      method: present.method,
      scan: (range, onRun) => {
        written.scan(range, () => {});
        present.scan(range, onRun);
      },
      close: () => {
        written.close();
        present.close();
      },
    };
  }

  written(spans: readonly Span[], protect: boolean): Span[] {
    const found = this.inner.written(spans, protect);
    if (protect) this.seen.push(...found);
    return found;
  }

  presentScanner(): PageScanner {
    return noting(this.inner.presentScanner(), this.seen, (run) => (run.flags & PAGE.WRITTEN) !== 0);
  }

  async presentWalk(spans: readonly Span[]): Promise<PageScanner> {
    const walked = await this.inner.presentWalk(spans);
    return noting(walked, this.seen, (run) => (run.flags & PAGE.WRITTEN) !== 0);
  }

  copied(): void {}

  restart(spans: readonly Span[]): void {
    this.written(spans, true);
  }

  /** Give the process's tracker back: the pages found written count as written again. */
  close(): void {
    try {
      const seen = mergeSpans(
        [...this.seen].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0)),
      );
      for (const s of seen) uffdWriteProtect(this.inner.descriptor, s.start, s.end - s.start, false);
    } catch {
      // The process is gone (a dump that killed it), or the VMA: nothing to give back.
    } finally {
      this.seen.length = 0;
      this.inner.close();
    }
  }
}

/**
 * What a dump builds on: the pages earlier layers hold and the tracker that knows which of them the
 * process wrote since.
 */

/**
 * The last resort where the kernel offers no write tracking: the xxHash64 of every page as it was
 * last copied. A page counts as written when its content hashes differently now (so reading the
 * whole tracked memory is the price of every scan). Since the hashes are of the bytes actually
 * copied, a page written and then written back is still sent again only if its content changed.
 */
export class HashTracker implements WriteTracker {
  readonly method = 'page-hashes';
  private readonly hashes = new Map<bigint, bigint>();

  constructor(readonly pid: number) {}

  tracks(v: TrackedVma): boolean {
    return trackable(v);
  }

  scanner(): PageScanner {
    const present = openPageScanner(this.pid);
    const buf = Buffer.allocUnsafe(HASH_BATCH);
    return {
      method: present.method,
      scan: (range, onRun) => {
        present.scan(range, (run) => {
          for (let at = run.start; at < run.end;) {
            const len = Number(run.end - at < BigInt(HASH_BATCH) ? run.end - at : BigInt(HASH_BATCH));
            let got = 0;
            try {
              got = processVmReadv(this.pid, buf, [{ addr: at, len }]);
            } catch {
              // unmapped meanwhile: reported as written, and the copy decides
            }
            for (let off = 0; off < len; off += PAGE_SIZE) {
              const page = at + BigInt(off);
              const same =
                off < got && this.hashes.get(page) === pageHash(buf.subarray(off, off + PAGE_SIZE));
              if (!same) onRun({ start: page, end: page + BigInt(PAGE_SIZE), flags: run.flags });
            }
            at += BigInt(len);
          }
        });
      },
      close: () => present.close(),
    };
  }

  written(spans: readonly Span[]): Span[] {
    return spansOfScan(this.scanner(), spans);
  }

  copied(ranges: readonly { addr: bigint; len: number }[], data: Buffer): void {
    let off = 0;
    for (const r of ranges) {
      for (let p = 0; p < r.len; p += PAGE_SIZE, off += PAGE_SIZE)
        this.hashes.set(r.addr + BigInt(p), pageHash(data.subarray(off, off + PAGE_SIZE)));
    }
  }

  /** copied() has the hashes of all of them already. */
  restart(): void {}

  close(): void {
    this.hashes.clear();
  }
}

/** Bytes read per process_vm_readv while hashing. */
const HASH_BATCH = 4 << 20;

export interface Baseline {
  tracker: WriteTracker;
  /** Pages the earlier layers hold (data or zero), sorted. */
  held: Span[];
  /** The image's own earlier layers, already written through the same sink, and their parts. */
  layers: LayerRecord[];
  parts: Record<string, PartSummary>;
  /** The image the earlier layers belong to, for an incremental dump; null for one image. */
  parent: ParentRecord | null;
  /** The spans of the tracked VMAs at the last pre-copy round: walked as soon as the process freezes. */
  lastTracked?: Span[];
}

/**
 * The pages a dump over `baseline` stores, in address order (pagesToDump()), those the baseline's
 * layers hold and the process has not written since marked `earlier`. Where the tracker can, one
 * walk of the tracked VMAs' page tables finds their present pages and which of them were written
 * (and protects those again): at 1 GiB each walk costs about 10 ms of frozen time, which `walked`
 * (the tracker's presentWalk(), started as the process froze) spends beside other work.
 */
export function pagesOverBaseline(
  pid: number,
  vmas: readonly (TrackedVma & Pick<Vma, 'kind'>)[],
  baseline: Baseline,
  maxLen: number,
  walked?: PageScanner,
): PageRange[] {
  const tracker = baseline.tracker;
  const scan = walked ?? tracker.presentScanner?.();
  if (!scan) {
    const tracked = trackedSpans(tracker, vmas);
    const unchanged = subtractSpans(tracked, tracker.written(tracked, true));
    return markEarlier(pagesToDump(pid, vmas, maxLen), intersectSpans(unchanged, baseline.held), maxLen);
  }
  const unwritten: Span[] = [];
  const recording: PageScanner = {
    method: scan.method,
    scan: (range, onRun) =>
      scan.scan(range, (run) => {
        if ((run.flags & PAGE.WRITTEN) === 0) pushSpan(unwritten, run.start, run.end);
        onRun(run);
      }),
    close: () => scan.close(),
  };
  const tracked = pagesToDump(
    pid,
    vmas.filter((v) => tracker.tracks(v)),
    maxLen,
    recording,
  );
  const others = pagesToDump(
    pid,
    vmas.filter((v) => !tracker.tracks(v)),
    maxLen,
  );
  return mergeRanges(markEarlier(tracked, intersectSpans(unwritten, baseline.held), maxLen), others);
}
