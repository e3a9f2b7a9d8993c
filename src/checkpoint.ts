// dump(): checkpoint a running process into an image. Orchestration only: freeze, ask each state
// module for its record, capture the pages, write the image, then let the process run on or kill
// it. Whatever fails, the process is released untouched and no partial image is left.
import { hostname, release } from 'node:os';
import { FerryError, isFerryError } from './errors.js';
import { initHashing } from './image/hash.js';
import { IMAGE_VERSION, sealManifest } from './image/manifest.js';
import { PageStoreWriter, roomBytes } from './image/page-store.js';
import { DirSink, type ImageSink, type PartSummary } from './image/sink.js';
import { readProcBytes, readProcText } from './proc/files.js';
import { userProcessStat } from './proc/process.js';
import { parseSmaps } from './proc/smaps.js';
import { parseStatus } from './proc/status.js';
import type { DumpContext } from './state/context.js';
import { dumpCreds } from './state/creds.js';
import { dumpFiles } from './state/files.js';
import { dumpFs } from './state/fs.js';
import type { Manifest } from './state/image.js';
import { trackedSpans, type Baseline } from './state/mem-dirty.js';
import { ProcessTracking, type TrackingPlan } from './state/mem-tracking.js';
import { copyPages, DUMP_BATCH, markEarlier, pagesToDump } from './state/mem-pages.js';
import { dumpVmas, type VmaRecord } from './state/mem-vmas.js';
import { dumpMm } from './state/mm.js';
import { dumpRlimits } from './state/rlimits.js';
import { dumpSignals } from './state/signals.js';
import { dumpThread, xsaveFeatures } from './state/thread.js';
import { refuseUnsupported } from './state/unsupported.js';
import { isErrno } from './sys/errno.js';
import { kill, SIG } from './sys/signal.js';
import { RemoteSyscalls } from './tracee/remote.js';
import { Tracee } from './tracee/tracee.js';
import { Timings } from './timings.js';
import { FERRY_VERSION } from './version.js';
import { classifyVmas } from './vma/classify.js';
import { parseVmaSelection } from './vma/select.js';
import { intersectSpans, mergeSpans, rangeSpans, subtractSpans, type Span } from './vma/spans.js';

export interface DumpOptions {
  /** Directory to write the image into (created if missing; an older image there is replaced). */
  dir?: string;
  /**
   * Or where else the image goes (a migration stream): the process is killed only once the sink's
   * commit() has resolved, and runs on when it throws.
   */
  sink?: ImageSink;
  /** Store the pages of these VMAs only (docs/VMA-SELECTION.md); the rest keep their layout. */
  vmas?: string;
  /** Let the process run on after the dump instead of killing it. */
  leaveRunning?: boolean;
  /** Compress the page data with zstd. */
  compress?: boolean;
  /** fsync the image before it counts as written (and before the process is killed). */
  sync?: boolean;
  /**
   * Earlier layers this image builds on (pre-copy rounds): pages unchanged since then are recorded
   * as such, not stored again. The tracker is closed before the process runs on or is killed.
   */
  baseline?: Baseline;
  /**
   * Or how this dump builds on an earlier image with dirty tracking kept between dumps: a
   * DumpChain (`dump --every`) or ProcessTracking (`--track-mem`, `--parent`).
   */
  tracking?: TrackingPlan;
  /**
   * Leave dirty-page tracking on in the process after this dump (it keeps a descriptor of ferry's
   * tracker), so that a later dump with `parent` stores only what changed. Needs `leaveRunning`.
   */
  trackMem?: boolean;
  /** The image an earlier `trackMem` dump of this process wrote: this one builds on it. */
  parent?: string;
  onProgress?: (progress: { stage: 'pages'; doneBytes: number; totalBytes: number }) => void;
  onWarning?: (message: string) => void;
}

export interface DumpResult {
  pid: number;
  /** The directory, or where the sink sent the image. */
  dir: string;
  /** Milliseconds the process did not run: from freezing until it ran on or was killed. */
  frozenMs: number;
  totalMs: number;
  vmas: number;
  /** Pages stored, pages found all-zero and left out, pages unchanged since an earlier layer. */
  pages: number;
  zeroPages: number;
  unchangedPages: number;
  bytesWritten: number;
  leftRunning: boolean;
  warnings: string[];
  /** Milliseconds per stage: freeze, state, scan, pages, write, commit, kill. */
  stages: Record<string, number>;
}

const SCRATCH_SIZE = 1 << 16;

/**
 * Pages of `vmas` the baseline's layers hold and the process has not written since: the tracked
 * VMAs' pages, less those written (protected again by the same scan), within what the layers hold.
 */
function unchangedPages(baseline: Baseline, vmas: readonly VmaRecord[]): Span[] {
  const tracked = trackedSpans(baseline.tracker, vmas);
  const written = baseline.tracker.written(tracked, true);
  return intersectSpans(subtractSpans(tracked, written), baseline.held);
}

/** Refuse before freezing what can never be dumped here. */
function checkTarget(pid: number): void {
  userProcessStat(pid);
  for (let p = process.pid; p > 1; p = Number(/^PPid:\s+(\d+)/m.exec(readProcText(p, 'status'))?.[1] ?? 0)) {
    if (p === pid)
      throw new FerryError('FERRY_USAGE', `process ${pid} is ferry itself or one of its ancestors`);
  }
}

function cmdline(pid: number): string[] {
  const raw = readProcBytes(pid, 'cmdline').toString('utf8');
  return raw === '' ? [] : raw.replace(/\0$/, '').split('\0');
}

function imageDir(options: DumpOptions): string {
  if (options.dir === undefined) throw new FerryError('FERRY_USAGE', 'dump needs a directory (-D) or a sink');
  return options.dir;
}

/** Checkpoint process `pid` into `options.dir` (or `options.sink`). */
export async function dump(pid: number, options: DumpOptions): Promise<DumpResult> {
  const started = performance.now();
  const timings = new Timings();
  await initHashing();
  const selection = options.vmas === undefined ? undefined : parseVmaSelection(options.vmas);
  checkTarget(pid);
  const warnings: string[] = [];
  const warn = (message: string): void => {
    warnings.push(message);
    options.onWarning?.(message);
  };
  const sink = options.sink ?? new DirSink(imageDir(options), options.sync ?? false);
  if (options.trackMem && !options.leaveRunning)
    throw new FerryError(
      'FERRY_USAGE',
      '--track-mem needs --leave-running: a killed process has nothing to track',
    );
  if ((options.trackMem || options.parent !== undefined) && (options.tracking || options.sink))
    throw new FerryError('FERRY_USAGE', '--track-mem and --parent write an image directory of their own');
  const plan =
    options.tracking ??
    (await ProcessTracking.prepare(pid, userProcessStat(pid).startTime, {
      trackMem: options.trackMem ?? false,
      parent: options.parent,
    }));
  let baseline = options.baseline;
  const parts: Record<string, PartSummary> = {};
  /** Saved file contents being written (awaited before the commit). */
  const partWrites: Promise<void>[] = [];
  let tracee: Tracee | undefined;
  let frozenAt = 0;
  let frozenMs = 0;
  const unfreeze = (how: 'release' | 'kill'): void => {
    if (!tracee) return;
    const t = tracee;
    tracee = undefined;
    if (how === 'kill') {
      // Killed is never running again: the time the kernel takes to tear it down is not frozen time.
      frozenMs = performance.now() - frozenAt;
      t.kill();
      return;
    }
    t.release();
    frozenMs = performance.now() - frozenAt;
  };
  try {
    // Made before the freeze: a compressed store's buffers take a while to fault in.
    const writer = new PageStoreWriter(
      sink.openPart('pages.img'),
      sink.openPart('pagemap.img'),
      options.compress ?? false,
      DUMP_BATCH,
    );
    tracee = Tracee.freeze(pid);
    frozenAt = performance.now();
    const tracker = options.baseline?.tracker;
    if (tracker) tracee.onRelease(() => tracker.close());
    plan.frozen(tracee);
    baseline ??= plan.baseline(sink.location);
    timings.mark('freeze');
    const remote = RemoteSyscalls.open(tracee);
    remote.installScratch({ size: SCRATCH_SIZE });
    const stat = userProcessStat(pid);
    const ctx: DumpContext = {
      pid,
      tracee,
      remote,
      stat,
      status: parseStatus(readProcText(pid, 'status'), `/proc/${pid}/status`),
      sink,
      writePart(name, data) {
        const part = sink.openPart(name);
        const written = part.write(data).then(async () => void (parts[name] = await part.close()));
        written.catch(() => {}); // awaited later; a failure must not go unhandled meanwhile
        partWrites.push(written);
      },
      warn,
      trackerFds: plan.trackerFds,
    };

    // Process state, each from its module. The remote scratch region goes before the VMAs are read.
    refuseUnsupported(ctx);
    const files = dumpFiles(ctx);
    const threads = tracee.tids.map((tid) => dumpThread(ctx, tid));
    const signals = dumpSignals(ctx);
    const mm = dumpMm(ctx);
    const creds = dumpCreds(ctx);
    const fs = dumpFs(ctx);
    const rlimits = dumpRlimits(ctx);
    remote.removeScratch();
    timings.mark('state');

    // Memory: the VMAs, then the pages the checkpoint stores.
    const smaps = parseSmaps(readProcText(pid, 'smaps'), `/proc/${pid}/smaps`);
    const classified = classifyVmas(
      smaps,
      stat,
      threads.map((t) => t.regs.rsp),
    );
    const vmas = dumpVmas(ctx, classified, (v) => selection?.matches(v) ?? true);
    plan.start(remote, classified);
    remote.close();
    const stored = vmas.filter((v) => v.content === 'pages');
    let ranges = pagesToDump(pid, stored, writer.maxRoom);
    if (baseline) ranges = markEarlier(ranges, unchangedPages(baseline, stored), writer.maxRoom);
    const totalBytes = roomBytes(ranges);
    writer.reserve(totalBytes); // a full disk shows now, before any page is copied
    timings.mark('scan');
    const copying = baseline?.tracker ?? plan.tracker;
    await copyPages(pid, ranges, writer, {
      onCopied: (copied, data) => copying?.copied(copied, data),
      onProgress: (doneBytes) => options.onProgress?.({ stage: 'pages', doneBytes, totalBytes }),
    });
    plan.pagesRead(mergeSpans(stored));
    timings.mark('pages');
    // With --leave-running the process runs on once its last page is read, while the rest is written.
    if (options.leaveRunning) unfreeze('release');
    const store = await writer.finish();
    await Promise.all(partWrites);
    timings.mark('write');
    parts['pages.img'] = store.pages;
    parts['pagemap.img'] = store.index;
    Object.assign(parts, baseline?.parts);

    const manifest: Omit<Manifest, 'checksum'> = {
      format: 'ferry-image',
      version: IMAGE_VERSION,
      ferry: FERRY_VERSION,
      created: new Date().toISOString(),
      host: { kernel: release(), hostname: hostname(), xfeatures: xsaveFeatures(threads[0]!.xstate) },
      parts,
      layers: baseline?.layers ?? [],
      parent: baseline?.parent ?? null,
      state: {
        pid,
        command: stat.comm,
        cmdline: cmdline(pid),
        selection: options.vmas ?? null,
        threads,
        mm,
        vmas,
        files,
        fs,
        creds,
        rlimits,
        signals,
      },
    };
    const { text, checksum } = sealManifest(manifest);
    await sink.commit(text);
    timings.mark('commit');
    plan.committed(sink.location, checksum, rangeSpans(ranges));
    unfreeze(options.leaveRunning ? 'release' : 'kill');
    timings.mark('end');
    await sink.settle().catch((err: unknown) => warn(`after the dump: ${String(err)}`));
    return {
      pid,
      dir: sink.location,
      frozenMs,
      totalMs: performance.now() - started,
      vmas: vmas.length,
      pages: store.dataPages,
      zeroPages: store.zeroPages,
      unchangedPages: store.earlierPages,
      bytesWritten: Object.values(parts).reduce((n, p) => n + p.size, 0) + text.length,
      leftRunning: options.leaveRunning ?? false,
      warnings,
      stages: timings.toJSON(),
    };
  } catch (err) {
    plan.failed();
    try {
      // The target may run it: the process must not run here too, nor be lost (docs/PROTOCOL.md).
      if (tracee && isFerryError(err, 'FERRY_MIGRATION_IN_DOUBT')) kill(pid, SIG.SIGSTOP);
      unfreeze('release');
    } finally {
      await Promise.allSettled(partWrites);
      await sink.abort();
    }
    if (isErrno(err, 'ESRCH') || isFerryError(err, 'FERRY_NO_SUCH_PROCESS', 'FERRY_ZOMBIE')) {
      throw new FerryError(
        'FERRY_PROCESS_EXITED',
        `process ${pid} exited during the dump: no image was written`,
        {
          cause: err,
        },
      );
    }
    throw err;
  }
}
