// restore(): bring a process back to life from an image, in a stub ferry made. Orchestration only:
// verify the image, start the stub, then each stage in order; a failure kills the stub and leaves
// nothing behind.
import { readlinkSync } from 'node:fs';
import { release } from 'node:os';
import { isatty } from 'node:tty';
import { FerryError, isFerryError } from './errors.js';
import { readImage, type Image, type ProcessImage } from './read-image.js';
import { readProcText } from './proc/files.js';
import { parseMaps, type MapsEntry } from './proc/maps.js';
import type { RestoreContext } from './state/context.js';
import { restoreCreds, setgroupsCall } from './state/creds.js';
import { borrowedFds, restoreFiles } from './state/files.js';
import { restoreLocks } from './state/locks.js';
import { TreeFds } from './state/fd-shared.js';
import { SysvSegments } from './state/sysv.js';
import { exitZombies, forkTree, type Made, type TreeRecord } from './state/tree.js';
import { restoreFs } from './state/fs.js';
import {
  beginPageCopy,
  restorePages,
  vmasToFill,
  type EarlyCopy,
  type StagedContent,
} from './memory/pages.js';
import { placeKernelVmas } from './memory/vdso.js';
import {
  adviceCalls,
  closeBackings,
  isPrivateAnonymous,
  mapVmas,
  prepareBackings,
  protectCalls,
  sharedMemory,
  type VmaRecord,
} from './memory/vmas.js';
import { restoreMm } from './state/mm.js';
import { restoreRlimits } from './state/rlimits.js';
import { restoreTask } from './state/task.js';
import { restoreOwners } from './state/fown.js';
import { externalKey } from './state/fd-external.js';
import { makePtys, ptyKey, takeTerminal } from './state/fd-pty.js';
import { releaseLock } from './state/netlock.js';
import { userProcessStat } from './proc/process.js';
import { handledFirst, restorePending, restoreSignals } from './state/signals.js';
import { seccompCalls } from './state/seccomp.js';
import { interruptedRegs } from './sys/regs.js';
import {
  cloneThreads,
  finishThread,
  pagesWrittenAtRestore,
  rseqCalls,
  restoreThread,
  xsaveFeatures,
  xstateInUse,
} from './state/thread.js';
import { restoreTimers } from './state/timers.js';
import { startRestoreStub, type PidMethod, type SamePid } from './stub/restore-stub.js';
import { STUB_SYSCALL_ADDRESS } from './stub/stub.js';
import { NR } from './sys/nr.js';
import { PR } from './sys/prctl.js';
import { Tracee } from './tracee/tracee.js';
import { ptraceGetXstate } from './sys/ptrace.js';
import { kill, SIG } from './sys/signal.js';
import { DEFAULT_SCRATCH_SIZE, RemoteSyscalls } from './tracee/remote.js';
import { startWorkerThreads } from './sys/call.js';
import { now, Timings } from './timings.js';
import { findGap, type Span } from './vma/gaps.js';
import type { Prefill } from './memory/prefill.js';
import { PageServer, type LazyMemory, type LazyTotals, type PageRequests } from './memory/lazy.js';

export interface RestoreOptions {
  /** Keep the original PID: insist ('require'), when possible ('try', the default), or not ('no'). */
  samePid?: SamePid;
  /** Descriptors that were a terminal get this restore's terminal ('inherit', the default) or /dev/null. */
  tty?: 'inherit' | 'null';
  /**
   * How to get the original PID: 'auto' (the default) clone3 with set_tid, or ns_last_pid where
   * clone3 cannot set a PID; or only one of them.
   */
  pidMethod?: PidMethod;
  /**
   * Leave the process stopped (SIGSTOP) instead of running: the caller continues it with SIGCONT or
   * kills it (a migration target holds it until the source lets go).
   */
  stopped?: boolean;
  /**
   * Leave every process of the tree stopped (SIGSTOP), as one stopped at dump comes back: not tied
   * to ferry, continued with SIGCONT. How a partial image (dump --vmas) restores, for inspection.
   */
  leaveStopped?: boolean;
  /**
   * Replacements for the image's external descriptors (a pipe or socket shared with a process
   * outside the dump): each key (`pipe:[123]`) with a descriptor of this process to give in its
   * place. An external descriptor without one is refused before anything is spawned.
   */
  inheritFds?: ReadonlyMap<string, number>;
  /** A restore begun during a pre-copy migration's rounds: its stub and staged memory (memory/prefill.ts). */
  prefill?: Prefill;
  /**
   * Let the process run before its anonymous memory is in: its pages come in as it touches them,
   * and all of them in the background (RestoreResult.lazy). Until they are all in, the process
   * dies with ferry.
   */
  lazy?: boolean;
  /**
   * A post-copy migration's target: the image's VMAs of content `remote` get their pages as the
   * process runs, asked of the source through this and handed to RestoreResult.lazy's server.
   */
  remotePages?: PageRequests;
  /**
   * The image is temporary (a received migration): page data written into the process is punched
   * out of its files as it goes, so that the memory its page cache held serves the process.
   */
  consumePages?: boolean;
  onWarning?: (message: string) => void;
  /** Aborting it stops the restore at its next step: what it made is killed. */
  signal?: AbortSignal;
  /**
   * Open, map, bind and watch each process's own paths (its files, cwd, executable, sockets) with its
   * own file credentials and groups, not ferry's root: the kernel refuses what its user may not do.
   * For a restore on behalf of someone limited to that user (an agent's uid-bound token).
   */
  asUser?: boolean;
}

export interface RestoreResult {
  pid: number;
  originalPid: number;
  /** Every process restored (the first is `pid`), under its new PID and the one it was dumped with. */
  processes: { pid: number; originalPid: number }[];
  /** Milliseconds from the start of restore() until the process ran. */
  restoreMs: number;
  pages: number;
  warnings: string[];
  /** Milliseconds per stage: verify, spawn, layout, pages, state, finish. */
  stages: Record<string, number>;
  /**
   * A lazy restore: the pages still to come in (from the image), the service that brings them, and
   * what it did once they are all in (rejected, the process was killed).
   */
  lazy?: { pages: number; server: PageServer; done: Promise<LazyTotals> };
}

const KERNEL_VMAS = new Set(['[vvar]', '[vvar_vclock]', '[vdso]', '[vsyscall]']);

/** An image restores on the kernel it was made on (same vDSO, same ABI of everything ferry restores). */
function checkKernel(image: Image): void {
  const made = image.manifest.host.kernel;
  if (made !== release()) {
    throw new FerryError(
      'FERRY_IMAGE_INCOMPATIBLE',
      `${image.location} was made on Linux ${made} and this is Linux ${release()}: restore needs the same kernel`,
    );
  }
}

/** The saved FPU/vector state must fit this CPU: every component in use must exist here. */
function checkCpu(image: Image, stubPid: number): void {
  const here = xsaveFeatures(ptraceGetXstate(stubPid));
  for (const t of image.processes.flatMap((p) => p.state.threads)) {
    const missing = xstateInUse(t.xstate) & ~here;
    if (missing !== 0n) {
      throw new FerryError(
        'FERRY_IMAGE_INCOMPATIBLE',
        `${image.location} holds CPU state this CPU lacks (xfeatures 0x${missing.toString(16)}; ` +
          `this CPU has 0x${here.toString(16)}, the image's had 0x${image.manifest.host.xfeatures.toString(16)})`,
      );
    }
  }
}

/**
 * A partial image (dump --vmas) lacks the contents of the VMAs it did not select: run, the process
 * would find zeros there and die, or worse. It restores stopped only, for inspection.
 */
/**
 * Every external descriptor of the image has a replacement, and every replacement given names one
 * (a misspelt key would otherwise be ignored).
 */
function checkExternal(image: Image, given: ReadonlyMap<string, number>): void {
  const keys = new Set<string>();
  for (const p of image.processes)
    for (const f of p.state.files) {
      if (f.kind !== 'external') continue;
      keys.add(f.key);
      if (!given.has(f.key))
        throw new FerryError(
          'FERRY_USAGE',
          `fd ${f.fd} of process ${p.state.pid} was ${f.key}, shared with ${f.holder} outside the image: ` +
            `give the restore a descriptor to use in its place with --inherit-fd fd[N]:${f.key} (N open in the restore, e.g. 3>/path or 3>&1)`,
        );
    }
  for (const key of given.keys())
    if (!keys.has(key))
      throw new FerryError(
        'FERRY_USAGE',
        `--inherit-fd names ${key}, which ${image.location} has no descriptor of`,
      );
}

const FROM_FILE = new Set(['text', 'file-shared', 'guard']);

function refusePartial(image: Image): void {
  for (const p of image.processes) {
    // Code and shared file mappings come back from their files, guard regions hold nothing; any
    // other VMA may have held what only the image had (relocated read-only data too).
    const missing = p.state.vmas.filter((v) => v.content === 'layout' && !FROM_FILE.has(v.kind));
    if (p.state.selection === null || missing.length === 0) continue;
    const hex = (n: bigint): string => `0x${n.toString(16)}`;
    const named = missing.slice(0, 4).map((v) => `${hex(v.start)}-${hex(v.end)} (${v.kind})`);
    const more = missing.length > 4 ? ` and ${missing.length - 4} more` : '';
    throw new FerryError(
      'FERRY_IMAGE_PARTIAL',
      `${image.location} holds the pages of the VMAs '${p.state.selection}' selects only: process ${p.state.pid} ` +
        `would run without the contents of ${named.join(', ')}${more}. Restore it --stopped to look at it`,
    );
  }
}

/** The terminal to give descriptors that were one (not on a pty of the image's), or /dev/null. */
function resolveTerminal(image: Image, tty: 'inherit' | 'null'): string {
  // Those on a pty of the image's own come back on it.
  const fds = image.processes.flatMap((p) =>
    p.state.files.filter((f) => f.kind === 'tty' && f.pty === null).map((f) => f.fd),
  );
  if (fds.length === 0 || tty === 'null') return '/dev/null';
  for (const fd of [0, 1, 2]) if (isatty(fd)) return readlinkSync(`/proc/self/fd/${fd}`);
  throw new FerryError(
    'FERRY_NO_TERMINAL',
    `the process had a terminal on fd ${fds.join(', ')}: restore it from a terminal, or pass --tty null`,
  );
}

/** The stub's own mappings and the control region ferry put in it. */
interface StubLayout {
  maps: MapsEntry[];
  control: Span;
}

/**
 * Give the stub a control region of ferry's, where the image maps nothing. `keep` (staged memory
 * of a prefill) is not the stub's own.
 */
function installControl(ctx: RestoreContext, vmas: readonly VmaRecord[], keep: readonly Span[]): StubLayout {
  const inKeep = (m: Span): boolean => keep.some((k) => k.start <= m.start && m.end <= k.end);
  const maps = parseMaps(readProcText(ctx.pid, 'maps')).filter((m) => !inKeep(m));
  const control = findGap([...vmas, ...maps, ...keep], BigInt(DEFAULT_SCRATCH_SIZE));
  if (control === undefined)
    throw new FerryError('FERRY_RESTORE_FAILED', 'no free address range for the restore');
  ctx.remote.installScratch({ at: control });
  ctx.remote.syscallInsn = ctx.remote.executorSyscall;
  return { maps, control: ctx.remote.scratchRange! };
}

/** Turn the stub into a blank address space: its own mappings gone, the kernel's VMAs in place. */
function clearStub(
  ctx: RestoreContext,
  vmas: readonly VmaRecord[],
  stub: StubLayout,
  keep: readonly Span[],
): void {
  ctx.remote.batch(
    stub.maps
      .filter((m) => !KERNEL_VMAS.has(m.name))
      .map((m) => ({ name: `munmap(${m.name || 'stub'})`, nr: NR.munmap, args: [m.start, m.end - m.start] })),
  );
  placeKernelVmas(ctx, vmas, stub.maps, [stub.control, ...keep]);
}

/**
 * Let a process restored with `stopped` run, and no longer die with its restorer: the death signal
 * a held process has is cleared inside it, frozen again for that once it runs (remote syscalls
 * cannot run in a process that is group-stopped).
 */
export function letRun(pid: number): void {
  kill(pid, SIG.SIGCONT);
  clearDeathSignal(pid);
}

/** The process no longer dies with its restorer. */
function clearDeathSignal(pid: number): void {
  const tracee = Tracee.freeze(pid);
  try {
    const remote = RemoteSyscalls.open(tracee);
    try {
      remote.check('prctl(PR_SET_PDEATHSIG, 0)', NR.prctl, PR.SET_PDEATHSIG, 0);
    } finally {
      remote.close();
    }
  } finally {
    tracee.release();
  }
}

/** What every process of the restore shares. */
interface Shared {
  image: Image;
  terminal: string;
  tree: TreeFds;
  sysv: SysvSegments;
  timings: Timings;
  cleanup: (() => void)[];
  warn: (message: string) => void;
}

/**
 * Turn one held stub into the process `proc` (its memory, descriptors, threads and state) and leave
 * it held, ready to run. `prefill` (the dumped process only) brings memory staged by a migration.
 * Returns the pages written.
 */
async function restoreProcess(
  made: Made,
  proc: ProcessImage,
  shared: Shared,
  options: {
    prefill?: Prefill;
    stopped?: boolean;
    samePid: SamePid;
    consumePages?: boolean;
    asUser?: boolean;
    lazy?: boolean;
    /** The dumped process (not a descendant): its parent is not restored with it. */
    root: boolean;
  },
): Promise<{ pages: number; lazy?: LazyMemory }> {
  const { image, timings } = shared;
  const state = proc.state;
  const remote = RemoteSyscalls.open(made.tracee, { insn: STUB_SYSCALL_ADDRESS });
  const ctx: RestoreContext = {
    pid: made.pid,
    originalPid: state.pid,
    stub: made.tracee,
    remote,
    source: image.source,
    cleanup: shared.cleanup,
    warn: shared.warn,
    tree: shared.tree,
    consumePages: options.consumePages ?? false,
    user: options.asUser ? { fsuid: state.creds.uids[3]!, fsgid: state.creds.gids[3]! } : undefined,
  };
  const prefill = options.prefill;
  const filled = vmasToFill(proc.pages, state.vmas);
  const keep = prefill?.stagingRanges() ?? [];
  const stub = installControl(ctx, state.vmas, keep);
  // Its own groups at once, for the paths opened with its own file credentials.
  if (ctx.user) remote.withData(() => remote.batch([setgroupsCall(remote, state.creds.groups)]));
  // The private anonymous memory to fill that the stub's mappings leave room for is made first,
  // and its pages begin to be copied in while the rest of the layout is made (not with a prefill's
  // staged memory, which is moved into place first).
  const occupied = [...stub.maps, stub.control, ...keep];
  const free = (v: VmaRecord): boolean => occupied.every((o) => o.end <= v.start || v.end <= o.start);
  // Not memory whose pages come in as it runs (a lazy restore's, post-copy's): nothing may be
  // copied into that before it is registered.
  const ready =
    keep.length > 0 || options.lazy
      ? []
      : state.vmas.filter((v) => filled.has(v) && isPrivateAnonymous(v) && v.content !== 'remote' && free(v));
  if (ready.length > 0) mapVmas(ctx, ready, filled, new Map());
  const early = ready.length > 0 ? beginPageCopy(ctx, proc, state.vmas, ready) : undefined;
  const mapped = new Set(ready);
  const { pages, written, lazy } = await afterEarlyCopy(early, () => {
    clearStub(ctx, state.vmas, stub, keep);
    const staged: StagedContent =
      prefill?.moveIntoPlace(remote, state.vmas, remote.scratchRange!) ?? new Map();
    for (const v of staged.keys()) filled.add(v); // mapped writable, protected at the end like these
    shared.sysv.prepare(state.shm, ctx.user);
    const backings = prepareBackings(ctx, state.vmas);
    mapVmas(
      ctx,
      state.vmas.filter((v) => !staged.has(v) && !mapped.has(v)),
      filled,
      backings,
    );
    closeBackings(ctx, backings);
    timings.mark('layout');
    return restorePages(
      ctx,
      proc,
      state.vmas,
      staged,
      early,
      options.lazy,
      pagesWrittenAtRestore(state.threads),
    );
  });
  try {
    await finishProcess(ctx, made, proc, shared, options, { written, filled, lazy });
  } catch (err) {
    lazy?.close();
    throw err;
  }
  return { pages, lazy };
}

/** restoreProcess() once its memory is laid out: the rest of its state, then its registers. */
async function finishProcess(
  ctx: RestoreContext,
  made: Made,
  proc: ProcessImage,
  shared: Shared,
  options: { stopped?: boolean; samePid: SamePid; root: boolean },
  memory: { written: Promise<void>; filled: ReadonlySet<VmaRecord>; lazy?: LazyMemory },
): Promise<void> {
  const { image, timings } = shared;
  const { remote } = ctx;
  const state = proc.state;
  const { written, filled, lazy } = memory;
  // While the pages are written, the state that does not touch memory.
  const { tids, channels } = await alongside(written, () => {
    restoreMm(ctx, state.mm);
    restoreFiles({ ...ctx, terminal: shared.terminal, controlling: state.controlling }, state.files);
    restoreLocks(ctx, state.locks);
    restoreFs(ctx, state.fs);
    restoreRlimits(ctx, state.rlimits);
    restoreTask(ctx, state.task);
    // The other threads share what is restored so far; IDs, names and credentials are each thread's.
    const tids = [made.pid, ...cloneThreads(ctx, state.threads.slice(1), options.samePid)];
    const channels = tids.map((tid, i) => (i === 0 ? remote : remote.thread(tid)));
    restoreOwners(ctx, state.owners, state.files, new Map(state.threads.map((t, i) => [t.tid, tids[i]!])), {
      was: image.manifest.tree.find((m) => m.pid === state.pid)?.pgid ?? 0,
      now: userProcessStat(made.pid).pgrp,
    });
    state.threads.forEach((thread, i) =>
      restoreThread({ ...ctx, remote: channels[i]! }, thread, !options.root),
    );
    restoreSignals(ctx, state.signals);
    state.threads.forEach((thread, i) =>
      restorePending({ ...ctx, remote: channels[i]! }, state.pending, thread.tid, tids[i]!),
    );
    restoreTimers(ctx, state.timers, new Map(state.threads.map((t, i) => [t.tid, tids[i]!])));
    timings.mark('state');
    return { tids, channels };
  });
  timings.mark('pages');
  // Credentials last, ptrace's access to the process checked against them from then on; in one
  // batch with what comes before them in the same thread (the process's protections and advice in
  // the first).
  // seccomp filters go in just before, while the stub may still install any (it is root); ferry's
  // own calls after them are not filtered while it holds the process (PTRACE_O_SUSPEND_SECCOMP).
  const filters = seccompCalls(state.threads, tids, channels);
  state.threads.forEach((thread, i) => {
    const first = i === 0 ? [...protectCalls(filled), ...adviceCalls(state.vmas)] : [];
    restoreCreds({ ...ctx, remote: channels[i]! }, thread.creds ?? state.creds, [
      ...first,
      ...rseqCalls(thread),
      ...filters[i]!,
    ]);
  });
  // A stub dies with ferry; the restored process does not, unless held for a migration: then it must
  // not outlive the agent holding it (letRun() undoes this).
  // A descendant gets its own signal back (its parent is restored with it); the dumped process's
  // parent is not, so its signal would mean nothing (and fire as ferry exits): it is said.
  const leader = state.threads[0]!.pdeathsig;
  if (options.root && state.threads.some((t) => t.pdeathsig !== 0))
    ctx.warn(
      `process ${state.pid} asked for signal ${state.threads.find((t) => t.pdeathsig !== 0)!.pdeathsig} when its parent dies (PR_SET_PDEATHSIG): its parent is not restored with it, so it is not set`,
    );
  const deathSignal = options.stopped || lazy ? SIG.SIGKILL : options.root ? 0 : leader;
  remote.check('prctl(PR_SET_PDEATHSIG)', NR.prctl, PR.SET_PDEATHSIG, deathSignal);
  for (const channel of channels.slice(1)) channel.close();
  remote.removeScratch();
  remote.close(); // before finishThread: closing puts back the mask the channel found
  // A thread that takes a handled signal at once (one pending at dump) does not restart the call the
  // signal interrupted: the call fails with EINTR, as it would have.
  const interrupting = handledFirst(state.threads, state.pending, state.signals);
  state.threads.forEach((thread, i) => {
    const by = interrupting[i];
    const regs = by ? interruptedRegs(thread.regs, by.restart) : thread.regs;
    finishThread(ctx, { ...thread, regs }, tids[i]!);
  });
  // The last thing before the process may run: nothing ferry does may touch its missing pages,
  // which only a fault served by ferry (after this) brings in.
  await lazy?.register();
  timings.mark('finish');
}

/**
 * Run `work` while an early copy goes on. Should `work` fail, the copy is waited for (nothing is
 * left writing into a process about to be killed), and the failure of `work` is the one thrown.
 */
async function afterEarlyCopy<T>(copy: EarlyCopy | undefined, work: () => T): Promise<T> {
  try {
    return work();
  } catch (err) {
    await copy?.written.catch(() => {});
    throw err;
  }
}

/**
 * Run `work` while `background` goes on, then wait for it. Should `work` fail, the background is
 * waited for all the same (nothing is left writing into a process about to be killed), and the
 * failure of `work` is the one thrown.
 */
async function alongside<T>(background: Promise<void>, work: () => T): Promise<T> {
  let result: T;
  try {
    result = work();
  } catch (err) {
    await background.catch(() => {});
    throw err;
  }
  await background;
  return result;
}

/**
 * Serve the pages of a lazily restored process until all are in; then it no longer dies with
 * ferry (should ferry die in between, after its last page, the process dies with it all the same:
 * its image, or a migration's source, still holds it). Should a page fail to come in, the process is killed (the image is untouched: restore it
 * again), and the failure said.
 */
function serveLazily(
  pid: number,
  memories: LazyMemory[],
  requests: PageRequests | undefined,
): { pages: number; server: PageServer; done: Promise<LazyTotals> } {
  const pages = memories.reduce((n, m) => n + m.pages, 0);
  const server = new PageServer(
    memories,
    () => {
      if (!running(pid)) return;
      // Stopped meanwhile (SIGSTOP, a terminal's ^Z): continued for the while it takes, stopped again.
      if (userProcessStat(pid).state !== 'T') return clearDeathSignal(pid);
      letRun(pid);
      kill(pid, SIG.SIGSTOP);
    },
    requests,
  );
  const done = server.done.catch((err: unknown) => {
    kill(pid, SIG.SIGKILL);
    const why = err instanceof Error ? err.message : String(err);
    throw new FerryError(
      'FERRY_RESTORE_FAILED',
      `the pages of process ${pid} could not all come in (${why}): it was killed`,
      { cause: err },
    );
  });
  return { pages, server, done };
}

/** Whether `pid` (a child of ferry's) runs still: not a zombie. */
function running(pid: number): boolean {
  try {
    userProcessStat(pid);
    return true;
  } catch (err) {
    if (isFerryError(err, 'FERRY_ZOMBIE', 'FERRY_NO_SUCH_PROCESS')) return false;
    throw err;
  }
}

/** The tree of an image: its record, or the dumped process alone (an image of one process). */
function treeOf(image: Image): TreeRecord {
  if (image.manifest.tree.length > 0) return image.manifest.tree;
  const pid = image.manifest.state.pid;
  return [
    { pid, ppid: 0, pgid: pid, sid: pid, command: image.manifest.state.command, exit: null, stopped: null },
  ];
}

/**
 * Restore the process (or tree of processes) whose image is in directory `from`, or of an image
 * readImage() opened and verified already.
 */
export async function restore(from: string | Image, options: RestoreOptions = {}): Promise<RestoreResult> {
  const started = now();
  const timings = new Timings();
  const image = typeof from === 'string' ? await readImage(from) : from;
  const dir = image.location;
  timings.mark('verify');
  checkKernel(image);
  const state = image.manifest.state;
  const tree = treeOf(image);
  if (tree.length > 1 && (options.stopped || options.prefill || options.lazy))
    throw new FerryError(
      'FERRY_UNSUPPORTED',
      `${dir} holds a tree of ${tree.length} processes: restoring a tree stopped or lazily, or migrating one, is not supported yet`,
    );
  if (options.lazy && (options.stopped || options.prefill))
    throw new FerryError('FERRY_UNSUPPORTED', 'a lazy restore is not held for a migration yet');
  // Once its pages are in, ferry clears the process's death signal inside it, which a stopped
  // process cannot run.
  if (options.lazy && options.leaveStopped)
    throw new FerryError(
      'FERRY_USAGE',
      'a lazy restore lets the process run: --lazy does not go with --stopped',
    );
  const remote = image.processes.some((p) => p.state.vmas.some((v) => v.content === 'remote'));
  if (remote && !options.remotePages)
    throw new FerryError(
      'FERRY_IMAGE_PARTIAL',
      `${dir} is a post-copy migration's: the source sends the pages of its anonymous memory once the process runs, so it restores only as that migration's target`,
    );
  if (!options.stopped && !options.leaveStopped) refusePartial(image);
  checkExternal(image, options.inheritFds ?? new Map());
  const warnings: string[] = [];
  const samePid = options.samePid ?? 'try';
  const shared: Shared = {
    image,
    terminal: resolveTerminal(image, options.tty ?? 'inherit'),
    tree: new TreeFds(
      borrowedFds(image.processes.map((p) => ({ pid: p.state.pid, files: p.state.files }))),
      sharedMemory(image.processes.map((p) => p.state.vmas)),
    ),
    sysv: new SysvSegments(),
    timings,
    cleanup: [],
    warn(message) {
      warnings.push(message);
      options.onWarning?.(message);
    },
  };
  /** Every stub made, the dumped process's first: on failure all are killed. */
  const made: Made[] = [];
  /** A lazy restore's memory (the dumped process's: a tree is not restored lazily). */
  const lazy: LazyMemory[] = [];
  // Before any process is made under its old PID (the page writes would start them after it).
  startWorkerThreads();
  try {
    // The caller's replacements for external descriptors: copies of ferry's own, held like the rest.
    shared.tree.hold(
      process.pid,
      [...(options.inheritFds ?? [])].map(([key, fd]) => ({ key: externalKey(key), fd })),
    );
    makePtys(
      image.processes.flatMap((p) => p.state.files.flatMap((f) => (f.kind === 'pty' ? [f] : []))),
      shared.tree,
      shared.warn,
    );
    const stub = options.prefill
      ? options.prefill.take()
      : startRestoreStub(state.pid, samePid, options.pidMethod);
    const root: Made = { record: tree[0]!, pid: stub.pid, tracee: stub.tracee };
    made.push(root);
    checkCpu(image, stub.pid);
    // Each session leader on a pty of the image takes it as it is made, before its children are.
    const controlling = new Map(image.processes.map((p) => [p.state.pid, p.state.controlling]));
    forkTree(tree, root, made, (remote, record) => {
      const c = controlling.get(record.pid);
      if (c) takeTerminal(remote, shared.tree.get(ptyKey(c.pty))!);
    });
    timings.mark('spawn');
    const byOriginal = new Map(made.map((m) => [m.record.pid, m]));
    let pages = 0;
    for (const [i, proc] of image.processes.entries()) {
      options.signal?.throwIfAborted();
      const prefill = i === 0 ? options.prefill : undefined;
      const restored = await restoreProcess(byOriginal.get(proc.state.pid)!, proc, shared, {
        prefill,
        stopped: options.stopped,
        consumePages: options.consumePages,
        asUser: options.asUser,
        // The dumped process's threads keep their IDs as --same-pid says; its descendants' when free.
        samePid: i === 0 ? samePid : 'try',
        root: i === 0,
        lazy: options.lazy ?? false,
      });
      pages += restored.pages;
      if (restored.lazy) lazy.push(restored.lazy);
    }
    options.signal?.throwIfAborted();
    exitZombies(made.filter((m) => m.record.exit !== null));
    // Queued while traced, the stop takes the process as soon as it leaves the ptrace stop.
    if (options.stopped) kill(stub.pid, SIG.SIGSTOP);
    // A process that was stopped stops again as it is let go: by SIGSTOP, whichever signal had
    // stopped it, since the kernel discards SIGTSTP, SIGTTIN and SIGTTOU in an orphaned process
    // group, as a restored tree's, in a session of its own, is.
    for (const m of made) if (m.record.stopped !== null || options.leaveStopped) kill(m.pid, SIG.SIGSTOP);
    // Every process of the tree gets its last registers while all are held: a refusal kills them all.
    for (const m of made) m.tracee.prepareRelease();
    for (const m of made.splice(0).reverse()) m.tracee.release();
    shared.sysv.finish(true);
    // Its TCP connections are back: their packets may flow again.
    const lock = image.manifest.networkLock;
    if (lock !== null && !releaseLock(lock))
      shared.warn(
        `the network lock ${lock} could not be lifted: delete it with 'nft delete table inet ${lock}'`,
      );
    timings.mark('finish');
    const served = lazy.splice(0);
    return {
      pid: stub.pid,
      originalPid: state.pid,
      processes: [...byOriginal.values()].map((m) => ({ pid: m.pid, originalPid: m.record.pid })),
      restoreMs: now() - started,
      pages,
      warnings,
      stages: timings.toJSON(),
      lazy: served.length > 0 ? serveLazily(stub.pid, served, options.remotePages) : undefined,
    };
  } catch (err) {
    for (const m of lazy) m.close();
    for (const m of made.reverse()) m.tracee.kill();
    shared.sysv.finish(false);
    options.prefill?.abort();
    if (
      isFerryError(
        err,
        'FERRY_IMAGE_INCOMPATIBLE',
        'FERRY_IMAGE_CORRUPT',
        'FERRY_PID_TAKEN',
        'FERRY_RESTORE_FAILED',
        'FERRY_INTERRUPTED',
      )
    )
      throw err;
    const why = err instanceof Error ? err.message : String(err);
    const what = made.length > 1 ? 'the new processes were killed' : 'the new process was killed';
    throw new FerryError('FERRY_RESTORE_FAILED', `restore of ${dir} failed: ${why}; ${what}`, {
      cause: err,
    });
  } finally {
    shared.tree.close();
    for (const step of shared.cleanup) step();
  }
}
