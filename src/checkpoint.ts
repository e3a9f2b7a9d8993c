// dump(): checkpoint a running process into an image. Orchestration only: freeze, ask each state
// module for its record, capture the pages, write the image, then let the process run on or kill
// it. Whatever fails, the process is released untouched and no partial image is left.
import { hostname, release } from 'node:os';
import { FerryError, isFerryError } from './errors.js';
import { initHashing } from './image/hash.js';
import { IMAGE_VERSION, pageParts, sealManifest } from './image/manifest.js';
import { PageStoreWriter, roomBytes } from './image/page-store.js';
import { DirSink, layerVmas, type ImageSink, type PartSummary } from './image/sink.js';
import { readProcBytes, readProcText } from './proc/files.js';
import { userProcessStat } from './proc/process.js';
import { parseSmaps } from './proc/smaps.js';
import { parseStatus } from './proc/status.js';
import type { DumpContext } from './state/context.js';
import { dumpCreds } from './state/creds.js';
import { dumpFiles } from './state/files.js';
import { TreeFiles } from './state/fd-shared.js';
import { freezeTree } from './state/tree.js';
import { dumpFs } from './state/fs.js';
import type { Manifest, ProcessState } from './state/image.js';
import { precopyForDump, type Precopy, type RoundReport } from './memory/precopy.js';
import { pagesOverBaseline, type Baseline } from './memory/dirty.js';
import { ProcessTracking, type TrackingPlan } from './memory/tracking.js';
import {
  copyPages,
  DUMP_BATCH,
  mergeRanges,
  pagesToDump,
  withSharedObjects,
  type PageRange,
} from './memory/pages.js';
import { dumpVmas, type VmaRecord } from './memory/vmas.js';
import { dumpMm } from './state/mm.js';
import { dumpRlimits } from './state/rlimits.js';
import { dumpTask } from './state/task.js';
import { dumpOwners } from './state/fown.js';
import { dumpControlling } from './state/fd-pty.js';
import { checkNft, NetworkLock } from './state/netlock.js';
import { dumpPending, dumpSignals } from './state/signals.js';
import { dumpThread, pagesWrittenAtRestore, xsaveFeatures, type ThreadRecord } from './state/thread.js';
import { dumpTimers } from './state/timers.js';
import { dumpSysv } from './state/sysv.js';
import { isErrno } from './sys/errno.js';
import { RemoteSyscalls } from './tracee/remote.js';
import { Tracee } from './tracee/tracee.js';
import { startWorkerThreads } from './sys/call.js';
import { now, Timings } from './timings.js';
import { FERRY_VERSION } from './version.js';
import { withGuardian, type Guardian } from './guardian.js';
import { smapsMarksGuards, type PageScanner } from './vma/pages.js';
import { classifyVmas } from './vma/classify.js';
import { parseVmaSelection, type VmaSelection } from './vma/select.js';
import { intersectSpans, mergeSpans, rangeSpans } from './vma/spans.js';

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
  /**
   * Take established TCP connections along (TCP_REPAIR) instead of refusing them. The dumped
   * connections go quiet: a killed process's end without a FIN or reset (docs/IMAGE.md).
   */
  tcpEstablished?: boolean;
  /**
   * Take the process's descendants too (the default): the image holds the tree. false refuses a
   * process that has children.
   */
  tree?: boolean;
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
  /**
   * Copy the memory while the process runs first, in rounds, then, frozen, only what it wrote
   * meanwhile. 'auto' (the default) does for a process without children holding at least 32 MiB
   * of anonymous memory, where userfaultfd tracks writes; true whenever it can (soft-dirty bits or
   * page hashes where userfaultfd cannot track writes); false never. Not with `vmas`, `trackMem`, `parent`.
   */
  preCopy?: boolean | 'auto';
  onProgress?: (progress: { stage: 'pre-copy' | 'pages'; doneBytes: number; totalBytes: number }) => void;
  onWarning?: (message: string) => void;
  /**
   * The guardian that undoes what ferry left in the processes should ferry die (src/guardian.ts);
   * without one, the dump starts its own.
   */
  guardian?: Guardian;
  /**
   * Aborting it stops the dump at its next step, before the image is complete: the process is let go
   * as it was (or, after the image is committed, the dump finishes).
   */
  signal?: AbortSignal;
  /** Called before the processes are fenced for a migration's commit (ImageSink.commit). */
  beforeFence?: () => void;
  /**
   * A post-copy migration: the pages of the process's anonymous memory (VMAs lazyCapable(), given
   * content `remote`) are not in the image. Once the sink's commit resolves (the copy runs on the
   * target), this sends them from the process, frozen still, and resolves when the target has them
   * all; then the process is killed. Should it fail, the migration is in doubt.
   */
  postCopy?: (vmas: readonly VmaRecord[]) => Promise<void>;
}

export interface DumpResult {
  pid: number;
  /** The directory, or where the sink sent the image. */
  dir: string;
  /**
   * Milliseconds the process did not run: from freezing until it ran on or was killed, and, with
   * a pre-copy, while tracking of its writes started.
   */
  frozenMs: number;
  /**
   * Milliseconds from freezing until the sink's commit resolved: for a migration, until the copy
   * ran on the target (with post-copy, the downtime; the pages come after).
   */
  committedMs: number;
  totalMs: number;
  /** Processes in the image: the dumped one and its descendants (zombies included). */
  processes: number;
  /** VMAs of all of them. */
  vmas: number;
  /**
   * Of the copy made frozen: pages stored, pages found all-zero and left out, pages unchanged
   * since an earlier layer (a pre-copy round, or the parent image).
   */
  pages: number;
  zeroPages: number;
  unchangedPages: number;
  /** The rounds copied while the process ran (pre-copy); none when all was copied frozen. */
  precopyRounds: RoundReport[];
  bytesWritten: number;
  leftRunning: boolean;
  warnings: string[];
  /** Milliseconds per stage: freeze, state, scan, pages, write, commit, kill. */
  stages: Record<string, number>;
}

const SCRATCH_SIZE = 1 << 16;

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

/** What dump() reads of one frozen process before its pages are copied. */
interface Capture {
  pid: number;
  state: ProcessState;
  writer: PageStoreWriter;
  /** The pages to copy, and the VMAs they come from. */
  ranges: PageRange[];
  stored: VmaRecord[];
}

/** The root process's part in an incremental dump or a pre-copy round. */
interface RootTracking {
  plan: TrackingPlan;
  baseline: Baseline | undefined;
}

/**
 * Read one frozen process: its state from each module, then its VMAs and which pages to copy.
 * `tracking` is given for the dumped process itself (never for its descendants).
 */
async function captureProcess(
  base: Omit<DumpContext, 'pid' | 'tracee' | 'remote' | 'stat' | 'status' | 'trackerFds'>,
  tracee: Tracee,
  writer: PageStoreWriter,
  selection: VmaSelection | undefined,
  treeFiles: TreeFiles,
  tracking?: RootTracking,
  postCopy = false,
): Promise<Capture> {
  const pid = tracee.pid;
  const remote = RemoteSyscalls.open(tracee);
  remote.installScratch({ size: SCRATCH_SIZE });
  const stat = userProcessStat(pid);
  const ctx: DumpContext = {
    ...base,
    pid,
    tracee,
    remote,
    stat,
    status: parseStatus(readProcText(pid, 'status'), `/proc/${pid}/status`),
    trackerFds: tracking?.plan.trackerFds ?? [],
  };
  // Process state, each from its module. The remote scratch region goes before the VMAs are read.
  const { files, locks } = dumpFiles(ctx, treeFiles);
  const owners = dumpOwners(
    ctx,
    files.map((f) => f.fd),
  );
  const controlling = dumpControlling(ctx, treeFiles, files);
  const signals = dumpSignals(ctx);
  const pending = dumpPending(ctx);
  const timers = dumpTimers(ctx);
  const mm = dumpMm(ctx);
  const creds = dumpCreds(remote, ctx.status);
  const threads = tracee.tids.map((tid) => dumpThread(ctx, tid, creds));
  const fs = dumpFs(ctx);
  const rlimits = dumpRlimits(ctx);
  const task = dumpTask(ctx);
  remote.removeScratch();

  // Memory. The page tables of what pre-copy rounds tracked are walked on another thread meanwhile,
  // as smaps walks them here (nothing is mapped or unmapped now: that would wait for the walk).
  // Not with post-copy: the walk protects what it finds written, and which pages of the `remote`
  // VMAs were written since the rounds is asked only once the copy runs (memory/postcopy.ts).
  const baseline = tracking?.baseline;
  const walk = postCopy
    ? undefined
    : baseline?.lastTracked && baseline.tracker.presentWalk?.(baseline.lastTracked);
  const { vmas, shm, stored, ranges } = await captureMemory(
    ctx,
    threads,
    writer,
    selection,
    tracking,
    walk,
    postCopy,
  ).catch(async (err: unknown) => {
    (await walk)?.close();
    throw err;
  });
  const state: ProcessState = {
    pid,
    command: stat.comm,
    cmdline: cmdline(pid),
    selection: selection?.spec ?? null,
    threads,
    mm,
    vmas,
    shm,
    files,
    locks,
    fs,
    creds,
    rlimits,
    owners,
    controlling,
    task,
    signals,
    pending,
    timers,
  };
  return { pid, state, writer, ranges, stored };
}

/**
 * A frozen process's VMAs, then the pages the checkpoint stores (over the baseline, with `walk`
 * when one was started, when there is one).
 */
async function captureMemory(
  ctx: DumpContext,
  threads: readonly ThreadRecord[],
  writer: PageStoreWriter,
  selection: VmaSelection | undefined,
  tracking: RootTracking | undefined,
  walk: Promise<PageScanner> | undefined,
  postCopy: boolean,
): Promise<Pick<Capture, 'stored' | 'ranges'> & { vmas: VmaRecord[]; shm: ProcessState['shm'] }> {
  const { pid, remote } = ctx;
  const smaps = parseSmaps(readProcText(pid, 'smaps'), `/proc/${pid}/smaps`);
  const classified = classifyVmas(
    smaps,
    ctx.stat,
    threads.map((t) => t.regs.rsp),
  );
  const vmas = dumpVmas(ctx, classified, (v) => selection?.matches(v) ?? true, postCopy);
  const shm = dumpSysv(ctx, classified);
  tracking?.plan.start(remote, classified);
  remote.close();
  const stored = vmas.filter((v) => v.content === 'pages');
  const baseline = tracking?.baseline;
  // Post-copy: of `remote` VMAs, only the pages the restore writes into are stored (after pre-copy
  // rounds, the source tells the target which of the rounds' pages still hold once the copy runs).
  const written = postCopy ? pagesToDump(pid, withWrittenAtRestore(vmas, threads), writer.maxRoom) : [];
  const ranges = mergeRanges(
    baseline
      ? pagesOverBaseline(pid, stored, baseline, writer.maxRoom, await walk)
      : pagesToDump(pid, stored, writer.maxRoom),
    written,
  );
  return {
    vmas,
    shm,
    stored,
    ranges: withSharedObjects(pid, stored, ranges, writer.maxRoom, ctx.sharedObjects),
  };
}

/**
 * The parts of `remote` VMAs (post-copy) that the restore writes into before the process runs
 * (pagesWrittenAtRestore()), as VMAs of their own: those pages cannot wait for the source.
 */
function withWrittenAtRestore(vmas: readonly VmaRecord[], threads: readonly ThreadRecord[]): VmaRecord[] {
  const written = pagesWrittenAtRestore(threads);
  return vmas
    .filter((v) => v.content === 'remote')
    .flatMap((v) => intersectSpans([v], written).map((s) => ({ ...v, start: s.start, end: s.end })));
}

/** Why a dump takes one process only, or undefined when it takes the tree. */
function oneProcessOnly(options: DumpOptions, precopied: boolean): string | undefined {
  if (options.tree === false) return 'and --no-tree was given: dump without it to take them too';
  if (precopied) return 'and a pre-copy takes one process: dump the tree with --no-pre-copy';
  if (options.sink || options.baseline)
    return 'and migrating a process tree is not supported yet: migrate one process';
  if (options.tracking || options.trackMem || options.parent !== undefined)
    return 'and incremental dumps (--every, --track-mem, --parent) take one process: dump the tree whole';
  return undefined;
}

/**
 * Whether this dump may pre-copy: true or 'auto' from the options, false when they rule it out
 * (a forced pre-copy they rule out is refused).
 */
function precopyChoice(options: DumpOptions): true | 'auto' | false {
  const want = options.preCopy ?? 'auto';
  if (want === false || options.sink || options.baseline || options.tracking) return false;
  const conflict =
    options.vmas !== undefined
      ? '--vmas (the rounds copy every VMA)'
      : options.trackMem || options.parent !== undefined
        ? '--track-mem and --parent (they build on an earlier image)'
        : undefined;
  if (conflict === undefined) return want;
  if (want === true) throw new FerryError('FERRY_USAGE', `--pre-copy does not go with ${conflict}`);
  return false;
}

/** Checkpoint process `pid` (and its descendants) into `options.dir` (or `options.sink`). */
export async function dump(pid: number, options: DumpOptions): Promise<DumpResult> {
  return withGuardian(options.guardian, (guardian) => dumpWatched(pid, options, guardian));
}

async function dumpWatched(pid: number, options: DumpOptions, guardian: Guardian): Promise<DumpResult> {
  const started = now();
  const timings = new Timings();
  await initHashing();
  // Started now, not by the first write while the process is frozen; likewise learnt now.
  startWorkerThreads();
  smapsMarksGuards();
  const selection = options.vmas === undefined ? undefined : parseVmaSelection(options.vmas);
  // A killed process's connections wait for its restore behind a network lock.
  const locking = options.tcpEstablished === true && !options.leaveRunning && !options.sink;
  if (locking) checkNft();
  const networkLock = locking ? new NetworkLock() : undefined;
  checkTarget(pid);
  const warnings: string[] = [];
  const warn = (message: string): void => {
    warnings.push(message);
    options.onWarning?.(message);
  };
  if (options.sink === undefined) imageDir(options);
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
  const preCopy = precopyChoice(options);
  // Made once the options hold: a refused command line leaves no directory behind.
  const sink: ImageSink = options.sink ?? new DirSink(imageDir(options), options.sync ?? false);
  // Should ferry die before the commit, its guardian removes the image it had begun.
  const partial = sink instanceof DirSink ? sink.partial : undefined;
  if (partial) guardian.partial(partial);
  let baseline = options.baseline;
  let pre: Precopy | undefined;
  const parts: Record<string, PartSummary> = {};
  /** Saved file contents being written (awaited before the commit). */
  const partWrites: Promise<void>[] = [];
  /** Every process frozen, the dumped one first. */
  let tracees: Tracee[] = [];
  let frozenAt = 0;
  let frozenMs = 0;
  const unfreeze = (how: 'release' | 'kill'): void => {
    const held = tracees.reverse(); // descendants first
    tracees = [];
    if (held.length === 0) return;
    if (how === 'kill') {
      // Killed is never running again: the time the kernel takes to tear it down is not frozen time.
      frozenMs = now() - frozenAt;
      for (const t of held) t.kill();
      return;
    }
    let first: Error | undefined;
    for (const t of held) {
      try {
        t.release();
      } catch (err) {
        first ??= err instanceof Error ? err : new Error(String(err));
      }
    }
    frozenMs = now() - frozenAt;
    if (first) throw first;
  };
  try {
    if (preCopy !== false) {
      pre = await precopyForDump(pid, sink, {
        preCopy,
        signal: options.signal,
        compress: options.compress ?? false,
        onWarning: warn,
        watch: guardian,
        onProgress: (p) => options.onProgress?.({ stage: 'pre-copy', ...p }),
      });
      baseline = pre?.baseline;
      timings.mark('pre-copy');
      options.signal?.throwIfAborted();
    }
    const writerFor = (names: { pages: string; index: string }): PageStoreWriter =>
      new PageStoreWriter(
        sink.openPart(names.pages),
        sink.openPart(names.index),
        options.compress ?? false,
        DUMP_BATCH,
      );
    // Made before the freeze: a compressed store's buffers take a while to fault in.
    const rootWriter = writerFor(pageParts());
    // What the rounds left behind (their buffers) is collected now rather than by a collection
    // that lands while the process is frozen (8-10 ms after 1 GiB of rounds); where the runtime
    // exposes gc(), as the command line does.
    if (baseline) globalThis.gc?.();
    const root = Tracee.freeze(pid, { watch: guardian, onWarning: warn });
    tracees = [root];
    frozenAt = now();
    const tracker = baseline?.tracker;
    if (tracker) root.onRelease(() => tracker.close());
    const members = freezeTree(root, oneProcessOnly(options, pre !== undefined));
    tracees = members.flatMap((m) => (m.tracee ? [m.tracee] : []));
    plan.frozen(root);
    baseline ??= plan.baseline(sink.location);
    timings.mark('freeze');
    const base = {
      sink,
      writePart(name: string, data: Buffer) {
        const part = sink.openPart(name);
        const written = part.write(data).then(async () => void (parts[name] = await part.close()));
        written.catch(() => {}); // awaited later; a failure must not go unhandled meanwhile
        partWrites.push(written);
      },
      warn,
      tcpEstablished: options.tcpEstablished ?? false,
      migrating: options.sink !== undefined,
      networkLock,
      sharedObjects: new Set<string>(),
    };
    const treeFiles = new TreeFiles(tracees.map((t) => t.pid));
    const captures: Capture[] = [];
    for (const [i, t] of tracees.entries()) {
      captures.push(
        i === 0
          ? await captureProcess(
              base,
              t,
              rootWriter,
              selection,
              treeFiles,
              { plan, baseline },
              options.postCopy !== undefined,
            )
          : await captureProcess(base, t, writerFor(pageParts(t.pid)), selection, treeFiles),
      );
    }
    treeFiles.checkEnds();
    const sizes = captures.map((c) => roomBytes(c.ranges));
    const totalBytes = sizes.reduce((a, b) => a + b, 0);
    captures.forEach((c, i) => c.writer.reserve(sizes[i]!)); // a full disk shows now, before any page is copied
    timings.mark('scan');
    options.signal?.throwIfAborted();
    // A migration's target may put the frozen pages straight into the process it restores, as it
    // did a pre-copy round's (not post-copy's: its anonymous memory comes once the copy runs).
    if (options.postCopy === undefined)
      await sink.layerStart?.(pid, pageParts(), layerVmas(captures[0]!.state.vmas));
    const copying = baseline?.tracker ?? plan.tracker;
    let before = 0;
    for (const [i, c] of captures.entries()) {
      options.signal?.throwIfAborted();
      await copyPages(c.pid, c.ranges, c.writer, {
        onCopied: i === 0 ? (copied, data) => copying?.copied(copied, data) : undefined,
        onProgress: (doneBytes) =>
          options.onProgress?.({ stage: 'pages', doneBytes: before + doneBytes, totalBytes }),
      });
      before += sizes[i]!;
    }
    plan.pagesRead(mergeSpans(captures[0]!.stored));
    timings.mark('pages');
    // With --leave-running the processes run on once their last page is read, while the rest is written.
    if (options.leaveRunning) unfreeze('release');
    const stores = await Promise.all(captures.map((c) => c.writer.finish()));
    await Promise.all(partWrites);
    timings.mark('write');
    captures.forEach((c, i) => {
      const names = pageParts(i === 0 ? undefined : c.pid);
      parts[names.pages] = stores[i]!.pages;
      parts[names.index] = stores[i]!.index;
    });
    Object.assign(parts, baseline?.parts);

    const [first, ...children] = captures.map((c) => c.state);
    const manifest: Omit<Manifest, 'checksum'> = {
      format: 'ferry-image',
      version: IMAGE_VERSION,
      ferry: FERRY_VERSION,
      created: new Date().toISOString(),
      host: { kernel: release(), hostname: hostname(), xfeatures: xsaveFeatures(first!.threads[0]!.xstate) },
      parts,
      layers: baseline?.layers ?? [],
      parent: baseline?.parent ?? null,
      networkLock: networkLock?.holding ? networkLock.table : null,
      state: first!,
      tree: members.map((m) => m.record),
      children,
    };
    const { text, checksum } = sealManifest(manifest);
    // A signal is handled when the event loop turns, which the frozen steps seldom let it do: once
    // here, so that one sent during them stops the dump before the image counts as written.
    if (options.signal) await new Promise((resolve) => setImmediate(resolve));
    options.signal?.throwIfAborted();
    await sink.commit(text, () => {
      options.beforeFence?.();
      for (const t of tracees) t.fence();
    });
    if (partial) guardian.unpartial(partial);
    const committedMs = now() - frozenAt;
    timings.mark('commit');
    if (options.postCopy) {
      try {
        await options.postCopy(captures[0]!.state.vmas.filter((v) => v.content === 'remote'));
      } catch (err) {
        // The copy runs there without all of its pages: the process here must not run, nor go.
        throw new FerryError(
          'FERRY_MIGRATION_IN_DOUBT',
          `the copy runs on the target, but its pages could not all go there (${err instanceof Error ? err.message : String(err)})`,
          { cause: err },
        );
      }
      timings.mark('post-copy');
    }
    plan.committed(sink.location, checksum, rangeSpans(captures[0]!.ranges));
    unfreeze(options.leaveRunning ? 'release' : 'kill');
    pre?.baseline.tracker.close(); // a killed process's release hooks do not run
    timings.mark('end');
    await sink.settle().catch((err: unknown) => warn(`after the dump: ${String(err)}`));
    const sum = (f: (s: (typeof stores)[number]) => number): number => stores.reduce((n, s) => n + f(s), 0);
    return {
      pid,
      dir: sink.location,
      frozenMs: frozenMs + (pre?.frozenMs ?? 0),
      committedMs: committedMs + (pre?.frozenMs ?? 0),
      totalMs: now() - started,
      processes: members.length,
      vmas: captures.reduce((n, c) => n + c.state.vmas.length, 0),
      pages: sum((s) => s.dataPages),
      zeroPages: sum((s) => s.zeroPages),
      unchangedPages: sum((s) => s.earlierPages),
      precopyRounds: pre?.rounds ?? [],
      bytesWritten: Object.values(parts).reduce((n, p) => n + p.size, 0) + text.length,
      leftRunning: options.leaveRunning ?? false,
      warnings,
      stages: timings.toJSON(),
    };
  } catch (err) {
    plan.failed();
    pre?.baseline.tracker.close();
    networkLock?.release(); // the process runs on, its connections with it
    try {
      // In doubt, the target may run it: the process must not run here too, nor be lost. Its fence
      // stays up, and it stops as it is let go (docs/PROTOCOL.md). Else the fence comes down.
      if (!isFerryError(err, 'FERRY_MIGRATION_IN_DOUBT')) for (const t of tracees) t.unfence();
      unfreeze('release');
    } finally {
      await Promise.allSettled(partWrites);
      await sink.abort();
      if (partial) guardian.unpartial(partial);
    }
    if (isFerryError(err, 'FERRY_INTERRUPTED') && !options.sink)
      throw new FerryError(
        'FERRY_INTERRUPTED',
        `dump of ${pid} ${err.message}: no image was written, and the process runs on as it was`,
      );
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
