// Dirty tracking across dumps. A TrackingPlan tells dump() how the image builds on an earlier one:
// DumpChain keeps the tracker open in ferry between the dumps of `dump --every`; ProcessTracking
// leaves it in the process between separate commands (`dump --track-mem`, then `--parent`).
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { parseStat } from '../proc/stat.js';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { FerryError, isFerryError } from '../errors.js';
import { readImage, type Image } from '../read-image.js';
import { NR } from '../sys/nr.js';
import { RemoteSyscalls } from '../tracee/remote.js';
import type { Tracee } from '../tracee/tracee.js';
import { mergeSpans, type Span } from '../vma/spans.js';
import type { Vma } from '../vma/vma.js';
import {
  DirtyTracker,
  findTracker,
  HashTracker,
  SoftDirtyTracker,
  type Baseline,
  type WriteTracker,
} from './dirty.js';

/** How a dump builds on an earlier image, step by step as dump() goes. */
export interface TrackingPlan {
  /** Descriptors of the process that are ferry's tracker: left out of the image. */
  readonly trackerFds: readonly number[];
  /** The tracker, once there is one: it hears every page copied. */
  readonly tracker: WriteTracker | undefined;
  /** The process is frozen, nothing read yet. */
  frozen(tracee: Tracee): void;
  /** What this dump, into `dir`, builds on (after frozen()); undefined: every page is stored. */
  baseline(dir: string): Baseline | undefined;
  /** Frozen, VMAs known, `remote` open: start a tracker if there is none. */
  start(remote: RemoteSyscalls, vmas: readonly Vma[]): void;
  /** Frozen, the pages read: `stored` are the VMAs whose pages the image holds. */
  pagesRead(stored: readonly Span[]): void;
  /** The image is complete; `held` are the pages it holds. */
  committed(dir: string, checksum: string, held: Span[]): void;
  /** The dump failed. */
  failed(): void;
}

/**
 * A tracker for the process frozen behind `remote`: userfaultfd write-protection, else the kernel's
 * soft-dirty bits, else page hashes (`onFallback` hears which, and why).
 */
export function startTracker(
  remote: RemoteSyscalls,
  vmas: readonly Vma[],
  onFallback: (message: string) => void,
): WriteTracker {
  try {
    return DirtyTracker.start(remote, vmas);
  } catch (err) {
    if (!isFerryError(err, 'FERRY_UNSUPPORTED')) throw err;
    try {
      const tracker = new SoftDirtyTracker(remote.pid);
      onFallback(`${err.message}: dirty tracking uses the kernel's soft-dirty bits`);
      return tracker;
    } catch (softErr) {
      if (!isFerryError(softErr, 'FERRY_UNSUPPORTED')) throw softErr;
      onFallback(`${err.message}, and ${softErr.message}: dirty tracking falls back to page hashes`);
      return new HashTracker(remote.pid);
    }
  }
}

/**
 * Dumps of one process, each storing only what changed since the one before (`dump --every`): the
 * tracker stays open between them, and each image names the one before as its parent. A failed
 * dump breaks the chain (the tracker may have protected pages that no image holds): the next dump
 * starts a new one.
 */
export class DumpChain implements TrackingPlan {
  readonly trackerFds = [];
  tracker: WriteTracker | undefined;
  /** The tracker this dump started, whose pages are all protected once read. */
  private fresh = false;
  private last: { dir: string; checksum: string; held: Span[] } | undefined;
  /** Images in the current chain. */
  length = 0;

  /** `onFallback` hears that tracking falls back to page hashes on this kernel. */
  constructor(private readonly onFallback: (message: string) => void = () => {}) {}

  /** What the next dump, into `dir`, builds on; undefined for the first of a chain. */
  baseline(dir: string): Baseline | undefined {
    if (!this.tracker || !this.last) return undefined;
    const parent = { path: relative(dir, this.last.dir) || '.', checksum: this.last.checksum };
    return { tracker: this.tracker, held: this.last.held, layers: [], parts: {}, parent };
  }

  frozen(): void {}

  start(remote: RemoteSyscalls, vmas: readonly Vma[]): void {
    this.fresh = !this.tracker;
    this.tracker ??= startTracker(remote, vmas, this.onFallback);
  }

  pagesRead(stored: readonly Span[]): void {
    // A new tracker counts every page as written: protect them all now, as they were read.
    if (this.fresh) this.tracker!.restart(stored);
  }

  /** A dump into `dir` is complete: the next one builds on it. */
  committed(dir: string, checksum: string, held: Span[]): void {
    this.last = { dir: resolve(dir), checksum, held };
    this.length++;
  }

  failed(): void {
    this.reset();
  }

  /** Start a new chain: the next dump stores every page. */
  reset(): void {
    this.tracker?.close();
    this.tracker = undefined;
    this.last = undefined;
    this.length = 0;
  }
}

/**
 * What ferry notes of a tracker left in a process by `dump --track-mem`: its descriptor there, and
 * the image its tracking started from (the parent the next dump must name). `broken`: a dump that
 * used it failed, and pages may have been protected that no image holds.
 */
export interface TrackingRecord {
  pid: number;
  /** The process's start time (/proc/PID/stat), so a reused PID is not taken for it. */
  startTime: string;
  fd: number;
  image: string;
  checksum: string;
  broken: boolean;
}

/** Where tracking records are kept: $FERRY_RUNTIME_DIR, else /run/ferry for root, else under /tmp. */
function trackingDir(): string {
  const base =
    process.env.FERRY_RUNTIME_DIR ??
    (process.getuid?.() === 0 ? '/run/ferry' : join(tmpdir(), `ferry-${process.getuid?.() ?? 0}`));
  return join(base, 'tracking');
}

const recordPath = (pid: number, startTime: bigint): string =>
  join(trackingDir(), `${pid}-${startTime}.json`);

const RECORD_NAME = /^(\d+)-(\d+)\.json$/;

/** Forget the records of processes that are gone (a PID reused later has another start time). */
function pruneTrackingRecords(): void {
  let names: string[];
  try {
    names = readdirSync(trackingDir());
  } catch {
    return; // no records at all
  }
  for (const name of names) {
    const m = RECORD_NAME.exec(name);
    if (!m) continue;
    let alive = false;
    try {
      alive = parseStat(readFileSync(`/proc/${m[1]}/stat`, 'latin1')).startTime === BigInt(m[2]!);
    } catch {
      // gone
    }
    if (!alive) rmSync(join(trackingDir(), name), { force: true });
  }
}

export function readTrackingRecord(pid: number, startTime: bigint): TrackingRecord | undefined {
  try {
    const r = JSON.parse(readFileSync(recordPath(pid, startTime), 'utf8')) as TrackingRecord;
    return r.pid === pid && r.startTime === String(startTime) && Number.isInteger(r.fd) ? r : undefined;
  } catch {
    return undefined;
  }
}

export function writeTrackingRecord(record: TrackingRecord): void {
  const path = recordPath(record.pid, BigInt(record.startTime));
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    writeFileSync(`${path}.tmp`, JSON.stringify(record), { mode: 0o600 });
    renameSync(`${path}.tmp`, path);
  } catch (err) {
    throw new FerryError(
      'FERRY_IMAGE_WRITE',
      `cannot note the dirty-page tracker in ${path}: ${String(err)}`,
      {
        cause: err,
      },
    );
  }
}

export function removeTrackingRecord(pid: number, startTime: bigint): void {
  rmSync(recordPath(pid, startTime), { force: true });
}

/**
 * `dump --track-mem` and `dump --parent <dir>`: the tracker lives in the process as a descriptor of
 * its own between ferry commands, and a record (above) says which image it started from. A dump
 * with a parent stores only what changed since that image, and only if the record names it; with
 * --track-mem the tracker stays (restarting from this image), without it the tracker goes.
 */
export class ProcessTracking implements TrackingPlan {
  tracker: DirtyTracker | undefined;

  private constructor(
    private readonly pid: number,
    private readonly startTime: bigint,
    private readonly trackMem: boolean,
    private readonly record: TrackingRecord | undefined,
    private readonly parent: { dir: string; image: Image } | undefined,
    /** The process's descriptor of ferry's tracker: its record's, or found in the process. */
    private readonly fd: number | undefined,
  ) {}

  /**
   * Check what the options ask of the process against its record; reads and verifies the parent.
   * With neither option, a dump only leaves the process's tracker (if any) out of the image.
   */
  static async prepare(
    pid: number,
    startTime: bigint,
    options: { trackMem: boolean; parent?: string },
  ): Promise<ProcessTracking> {
    pruneTrackingRecords();
    const record = readTrackingRecord(pid, startTime);
    // Without its record (lost, or removed by hand), a tracker is still found in the process.
    const fd = record?.fd ?? findTracker(pid);
    if (options.parent === undefined)
      return new ProcessTracking(pid, startTime, options.trackMem, record, undefined, fd);
    const dir = resolve(options.parent);
    const image = await readImage(dir);
    const lost = (why: string): never => {
      throw new FerryError(
        'FERRY_TRACKING_LOST',
        `cannot dump ${pid} on top of ${dir}: ${why}; dump with --track-mem and without --parent to start again`,
      );
    };
    if (image.manifest.state.pid !== pid) lost(`that image is of process ${image.manifest.state.pid}`);
    if (!record)
      lost(
        fd === undefined
          ? 'no dump --track-mem of this process is tracking it'
          : `the record of its tracking (descriptor ${fd}) is gone; \`ferry untrack ${pid}\` releases the tracker`,
      );
    else if (record.broken) lost('a dump since then failed, and its tracking with it');
    else if (record.checksum !== image.manifest.checksum)
      lost(`its tracking goes on from ${record.image} now`);
    return new ProcessTracking(pid, startTime, options.trackMem, record, { dir, image }, fd);
  }

  get trackerFds(): number[] {
    return this.fd === undefined ? [] : [this.fd];
  }

  frozen(): void {
    // A tracker without a parent is an older one, or one whose record is gone: --track-mem starts
    // it again from this image.
    if (this.fd !== undefined && (this.parent || this.trackMem))
      this.tracker = DirtyTracker.adopt(this.pid, this.fd);
  }

  baseline(dir: string): Baseline | undefined {
    if (!this.parent || !this.tracker) return undefined;
    return {
      tracker: this.tracker,
      held: mergeSpans(this.parent.image.pages),
      layers: [],
      parts: {},
      parent: {
        path: relative(resolve(dir), this.parent.dir) || '.',
        checksum: this.parent.image.manifest.checksum,
      },
    };
  }

  start(remote: RemoteSyscalls, vmas: readonly Vma[]): void {
    if (this.trackMem) {
      this.tracker ??= DirtyTracker.start(remote, vmas, true);
      // Until this dump is complete, the tracker is no base for another.
      this.note({ image: '', checksum: '', broken: true });
    } else if (this.record && this.parent) {
      // This is the last dump of the chain: the process lets go of its tracker (ours stays open
      // until the dump is done, so tracking goes on until then).
      remote.check('close', NR.close, this.fd!);
      removeTrackingRecord(this.pid, this.startTime);
    }
  }

  pagesRead(stored: readonly Span[]): void {
    // Without a parent, tracking starts from this image: protect every page as it was read.
    if (this.trackMem && !this.parent) this.tracker!.restart(stored);
  }

  committed(dir: string, checksum: string): void {
    if (this.trackMem) this.note({ image: resolve(dir), checksum, broken: false });
    this.tracker?.close();
  }

  failed(): void {
    this.tracker?.close();
  }

  private note(what: Pick<TrackingRecord, 'image' | 'checksum' | 'broken'>): void {
    writeTrackingRecord({
      pid: this.pid,
      startTime: String(this.startTime),
      fd: this.tracker!.inProcessFd!,
      ...what,
    });
  }
}
