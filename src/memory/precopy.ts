// Pre-copy (docs/PROTOCOL.md): copy the process's memory while it runs, in rounds, each round only
// the pages written since the round before, until what is left would fit the downtime budget or
// stops shrinking. Each round's pages go out as an earlier page layer of the one image; the final
// dump, frozen, then sends only what was written since the last round.
import { PageStoreWriter, roomBytes } from '../image/page-store.js';
import type { LayerRecord } from '../image/manifest.js';
import { layerVmas, type ImageSink, type PartSummary } from '../image/sink.js';
import { isFerryError } from '../errors.js';
import { readProcText } from '../proc/files.js';
import { userProcessStat } from '../proc/process.js';
import { parseSmaps } from '../proc/smaps.js';
import { parseStatus } from '../proc/status.js';
import {
  DirtyTracker,
  findTracker,
  LentTracker,
  HashTracker,
  SoftDirtyTracker,
  trackedSpans,
  type Baseline,
  type WriteTracker,
} from './dirty.js';
import { startTracker } from './tracking.js';
import { childrenOf } from '../state/tree.js';
import { copyPages, DUMP_BATCH, pagesToDump } from './pages.js';
import { RemoteSyscalls } from '../tracee/remote.js';
import { Tracee } from '../tracee/tracee.js';
import type { TraceeWatch } from '../tracee/watch.js';
import { classifyVmas } from '../vma/classify.js';
import { rangeSpans, spanBytes, unionSpans, type Span } from '../vma/spans.js';
import { SPECIAL_KINDS, type Vma } from '../vma/vma.js';
import { now } from '../timings.js';

/** How writes are tracked: the best this kernel has ('auto'), or one forced. */
export type TrackingChoice = 'auto' | 'uffd-wp' | 'soft-dirty' | 'page-hashes';

export interface PrecopyOptions {
  tracking?: TrackingChoice;
  /** Told what ferry does to the process (its guardian), should ferry die meanwhile. */
  watch?: TraceeWatch;
  /** Aborting it stops the rounds before the next. */
  signal?: AbortSignal;
  /** Hears that tracking fell back to page hashes. */
  onWarning?: (message: string) => void;
  /** The downtime to aim for: rounds go on while what is left would take longer to send. */
  maxDowntimeMs: number;
  /** Rounds at most before the final copy. */
  maxRounds?: number;
  compress?: boolean;
  onRound?: (round: RoundReport) => void;
  /** Bytes copied so far in the current round. */
  onProgress?: (progress: { round: number; doneBytes: number; totalBytes: number }) => void;
}

export interface RoundReport {
  round: number;
  /** Bytes of pages copied in the round, and how long it took (the target's prefill included). */
  bytes: number;
  ms: number;
  /** Bytes written by the process meanwhile, plus what is never tracked: what the next copy has to send. */
  leftBytes: number;
  /** The target restored this round's pages into the new process already (prefill). */
  prefilled: boolean;
}

export interface Precopy {
  baseline: Baseline;
  rounds: RoundReport[];
  /** Milliseconds the process was frozen to start tracking its writes (and, soft-dirty, to scan them). */
  frozenMs: number;
}

const DEFAULT_MAX_ROUNDS = 30;
/** A round that copies at least this much gives a fair measure of the transfer rate. */
const RATE_SAMPLE_BYTES = 4 << 20;
/** Rounds stop when what is left shrinks by less than this from one round to the next. */
const SHRINK = 0.9;
/**
 * The share of the downtime the frozen copy of what is left may take: reading the state, and the
 * target restoring it, take most of the rest (and one more round costs little downtime).
 */
const COPY_SHARE = 0.25;

/** The process's VMAs now, while it runs. */
function currentVmas(pid: number): Vma[] {
  return classifyVmas(parseSmaps(readProcText(pid, 'smaps'), `/proc/${pid}/smaps`), userProcessStat(pid), []);
}

/**
 * Start tracking, freezing the process just long enough to start a userfaultfd in it; and how
 * long that was.
 */
function startTracking(pid: number, options: PrecopyOptions): { tracker: WriteTracker; frozenMs: number } {
  if (options.tracking === 'page-hashes') return { tracker: new HashTracker(pid), frozenMs: 0 };
  if (options.tracking === 'soft-dirty') return { tracker: new SoftDirtyTracker(pid), frozenMs: 0 };
  // A process tracked for its incremental dumps lends its tracker: a second could not register.
  const held = findTracker(pid);
  if (held !== undefined) return { tracker: LentTracker.lend(pid, held), frozenMs: 0 };
  const tracee = Tracee.freeze(pid, { watch: options.watch, onWarning: options.onWarning });
  const frozenAt = now();
  let tracker: WriteTracker;
  try {
    const remote = RemoteSyscalls.open(tracee);
    try {
      const vmas = currentVmas(pid);
      tracker =
        options.tracking === 'uffd-wp'
          ? DirtyTracker.start(remote, vmas)
          : startTracker(remote, vmas, options.onWarning ?? (() => {}));
    } finally {
      remote.close();
    }
  } finally {
    tracee.release();
  }
  return { tracker, frozenMs: now() - frozenAt };
}

/**
 * Run the rounds into `sink`. The returned baseline's tracker is open: the final dump reads what
 * changed since the last round from it, and the caller closes it.
 */
export async function precopy(pid: number, sink: ImageSink, options: PrecopyOptions): Promise<Precopy> {
  const { tracker, frozenMs } = startTracking(pid, options);
  /** VMAs whose pages the final copy sends whole (the kernel's own VMAs hold none). */
  const isUntracked = (v: Vma): boolean => !tracker.tracks(v) && !SPECIAL_KINDS.has(v.kind);
  try {
    const rounds: RoundReport[] = [];
    const layers: LayerRecord[] = [];
    const parts: Record<string, PartSummary> = {};
    let held: Span[] = [];
    let lastTracked: Span[] = [];
    let rate = 0; // bytes per ms, the best seen
    const maxRounds = options.maxRounds ?? DEFAULT_MAX_ROUNDS;
    for (let round = 1; round <= maxRounds; round++) {
      options.signal?.throwIfAborted();
      const started = now();
      const vmas = currentVmas(pid);
      const tracked = vmas.filter((v) => tracker.tracks(v));
      const ranges = pagesToDump(pid, tracked, DUMP_BATCH, tracker.scanner(true));
      const totalBytes = roomBytes(ranges);
      const names = { pages: `pages-${round}.img`, index: `pagemap-${round}.img` };
      const notice = layerVmas(vmas);
      await sink.layerStart?.(pid, names, notice);
      const writer = new PageStoreWriter(
        sink.openPart(names.pages),
        sink.openPart(names.index),
        options.compress ?? false,
        DUMP_BATCH,
      );
      const stored = await copyPages(pid, ranges, writer, {
        running: true,
        onCopied: (copied, data) => tracker.copied(copied, data),
        onProgress: (doneBytes) => options.onProgress?.({ round, doneBytes, totalBytes }),
      });
      const summary = await writer.finish();
      parts[names.pages] = summary.pages;
      parts[names.index] = summary.index;
      layers.push(names);
      // The copy's own time, for the rate: what follows is the target taking the layer in.
      const copyMs = now() - started;
      const prefilled = await sink.layerDone?.(pid, names, notice);
      const copied = rangeSpans(stored);
      held = unionSpans(held, copied);
      const ms = now() - started;
      const bytes = spanBytes(copied);
      if (bytes >= RATE_SAMPLE_BYTES || rate === 0) rate = Math.max(rate, bytes / Math.max(copyMs, 1));

      // What the final copy would send now: pages written meanwhile, and the untracked VMAs' pages.
      lastTracked = trackedSpans(tracker, vmas);
      const written = spanBytes(tracker.written(lastTracked, false));
      const untracked = roomBytes(pagesToDump(pid, vmas.filter(isUntracked), DUMP_BATCH));
      const report = { round, bytes, ms, leftBytes: written + untracked, prefilled: prefilled ?? false };
      rounds.push(report);
      options.onRound?.(report);
      const previous = rounds.at(-2)?.leftBytes ?? Infinity;
      if (report.leftBytes / Math.max(rate, 1) <= options.maxDowntimeMs * COPY_SHARE) break;
      if (report.leftBytes >= previous * SHRINK) break;
    }
    return {
      baseline: { tracker, held, layers, parts, parent: null, lastTracked },
      rounds,
      // A soft-dirty tracker freezes the process for each round's scan, too.
      frozenMs: frozenMs + (tracker.frozenMs ?? 0),
    };
  } catch (err) {
    tracker.close();
    throw err;
  }
}

/** Anonymous memory a process holds before dump() copies it while it runs first, by default. */
const DUMP_PRECOPY_MIN_BYTES = 32 << 20;
/** A dump's rounds stop once the frozen copy of what is left would take about this long. */
const DUMP_FROZEN_COPY_MS = 10;
const DUMP_MAX_ROUNDS = 3;

export interface DumpPrecopyOptions {
  /** true: always (soft-dirty bits or page hashes where userfaultfd cannot track writes); 'auto': when it pays. */
  preCopy: true | 'auto';
  compress: boolean;
  onWarning?: (message: string) => void;
  watch?: TraceeWatch;
  signal?: AbortSignal;
  onProgress?: (progress: { doneBytes: number; totalBytes: number }) => void;
}

/**
 * A dump's rounds into `sink` while the process runs (DumpOptions.preCopy), or undefined when the
 * dump copies all of its memory frozen. 'auto' pre-copies a process without children that holds at
 * least 32 MiB of anonymous memory, and only where userfaultfd tracks its writes: page hashes would
 * read all of it again while it is frozen.
 */
export async function precopyForDump(
  pid: number,
  sink: ImageSink,
  options: DumpPrecopyOptions,
): Promise<Precopy | undefined> {
  const auto = options.preCopy === 'auto';
  if (auto) {
    const status = parseStatus(readProcText(pid, 'status'), `/proc/${pid}/status`);
    if (status.rssAnon < DUMP_PRECOPY_MIN_BYTES || childrenOf(pid).length > 0) return undefined;
  }
  try {
    return await precopy(pid, sink, {
      tracking: auto ? 'uffd-wp' : 'auto',
      onWarning: options.onWarning,
      watch: options.watch,
      signal: options.signal,
      maxDowntimeMs: DUMP_FROZEN_COPY_MS / COPY_SHARE,
      maxRounds: DUMP_MAX_ROUNDS,
      compress: options.compress,
      onProgress: options.onProgress,
    });
  } catch (err) {
    if (auto && isFerryError(err, 'FERRY_UNSUPPORTED')) return undefined;
    throw err;
  }
}
