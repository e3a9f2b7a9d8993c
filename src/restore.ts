// restore(): bring a process back to life from an image, in a stub ferry made. Orchestration only:
// verify the image, start the stub, then each stage in order; a failure kills the stub and leaves
// nothing behind.
import { readlinkSync } from 'node:fs';
import { release } from 'node:os';
import { isatty } from 'node:tty';
import { FerryError, isFerryError } from './errors.js';
import type { PartSummary } from './image/sink.js';
import { readImage, type Image } from './read-image.js';
import { readProcText } from './proc/files.js';
import { parseMaps } from './proc/maps.js';
import type { RestoreContext } from './state/context.js';
import { restoreCreds } from './state/creds.js';
import { restoreFiles } from './state/files.js';
import { restoreFs } from './state/fs.js';
import { restorePages, vmasToFill, type StagedContent } from './state/mem-pages.js';
import { placeKernelVmas } from './state/mem-vdso.js';
import { closeBackings, mapVmas, prepareBackings, protectVmas } from './state/mem-vmas.js';
import { restoreMm } from './state/mm.js';
import { restoreRlimits } from './state/rlimits.js';
import { restoreSignals } from './state/signals.js';
import { cloneThreads, finishThread, restoreThread, xsaveFeatures, xstateInUse } from './state/thread.js';
import { startRestoreStub, type PidMethod, type RestoreStub, type SamePid } from './stub/restore-stub.js';
import { STUB_SYSCALL_ADDRESS } from './stub/stub.js';
import { NR } from './sys/nr.js';
import { PR } from './sys/prctl.js';
import { Tracee } from './tracee/tracee.js';
import { ptraceGetXstate } from './sys/ptrace.js';
import { kill, SIG } from './sys/signal.js';
import { DEFAULT_SCRATCH_SIZE, RemoteSyscalls } from './tracee/remote.js';
import { Timings } from './timings.js';
import { findGap, type Span } from './vma/gaps.js';
import type { Prefill } from './prefill.js';

export interface RestoreOptions {
  /** Keep the original PID: insist ('require'), when possible ('try', the default), or not ('no'). */
  samePid?: SamePid;
  /** Descriptors that were a terminal get this restore's terminal ('inherit', the default) or /dev/null. */
  tty?: 'inherit' | 'null';
  /** How to get the original PID; 'auto' uses clone3 with set_tid, falling back to ns_last_pid. */
  pidMethod?: PidMethod;
  /**
   * Leave the process stopped (SIGSTOP) instead of running: the caller continues it with SIGCONT or
   * kills it (a migration target holds it until the source lets go).
   */
  stopped?: boolean;
  /** Parts whose size and checksum were taken as they were written: not hashed again. */
  verifiedParts?: Record<string, PartSummary>;
  /** A restore begun during a pre-copy migration's rounds: its stub and staged memory (prefill.ts). */
  prefill?: Prefill;
  onWarning?: (message: string) => void;
}

export interface RestoreResult {
  pid: number;
  originalPid: number;
  /** Milliseconds from the start of restore() until the process ran. */
  restoreMs: number;
  pages: number;
  warnings: string[];
  /** Milliseconds per stage: verify, spawn, layout, pages, state, finish. */
  stages: Record<string, number>;
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
  for (const t of image.manifest.state.threads) {
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

/** The terminal to give descriptors that were one, or null when none was. */
function resolveTerminal(image: Image, tty: 'inherit' | 'null'): string {
  const fds = image.manifest.state.files.filter((f) => f.kind === 'tty').map((f) => f.fd);
  if (fds.length === 0 || tty === 'null') return '/dev/null';
  for (const fd of [0, 1, 2]) if (isatty(fd)) return readlinkSync(`/proc/self/fd/${fd}`);
  throw new FerryError(
    'FERRY_NO_TERMINAL',
    `the process had a terminal on fd ${fds.join(', ')}: restore it from a terminal, or pass --tty null`,
  );
}

/**
 * Turn the stub into a blank address space: a control region of ferry's, the kernel's VMAs in place.
 * `keep` (staged memory of a prefill) stays.
 */
function bootstrap(ctx: RestoreContext, image: Image, keep: readonly Span[]): void {
  const vmas = image.manifest.state.vmas;
  const inKeep = (m: Span): boolean => keep.some((k) => k.start <= m.start && m.end <= k.end);
  const stubMaps = parseMaps(readProcText(ctx.pid, 'maps')).filter((m) => !inKeep(m));
  const control = findGap([...vmas, ...stubMaps, ...keep], BigInt(DEFAULT_SCRATCH_SIZE));
  if (control === undefined)
    throw new FerryError('FERRY_RESTORE_FAILED', 'no free address range for the restore');
  ctx.remote.installScratch({ at: control });
  ctx.remote.syscallInsn = ctx.remote.executorSyscall;
  const controlRange = ctx.remote.scratchRange!;
  ctx.remote.batch(
    stubMaps
      .filter((m) => !KERNEL_VMAS.has(m.name))
      .map((m) => ({ name: `munmap(${m.name || 'stub'})`, nr: NR.munmap, args: [m.start, m.end - m.start] })),
  );
  placeKernelVmas(ctx, vmas, stubMaps, [controlRange, ...keep]);
}

/**
 * Let a process restored with `stopped` run, and no longer die with its restorer: the death signal
 * a held process has is cleared inside it, frozen again for that once it runs (remote syscalls
 * cannot run in a process that is group-stopped).
 */
export function letRun(pid: number): void {
  kill(pid, SIG.SIGCONT);
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

/** Restore the process whose image is in `dir`. */
export async function restore(dir: string, options: RestoreOptions = {}): Promise<RestoreResult> {
  const started = performance.now();
  const timings = new Timings();
  const image = await readImage(dir, options.verifiedParts);
  timings.mark('verify');
  checkKernel(image);
  const state = image.manifest.state;
  const terminal = resolveTerminal(image, options.tty ?? 'inherit');
  const warnings: string[] = [];
  const cleanup: (() => void)[] = [];
  let stub: RestoreStub | undefined;
  try {
    stub = options.prefill
      ? options.prefill.take()
      : startRestoreStub(state.pid, options.samePid ?? 'try', options.pidMethod);
    checkCpu(image, stub.pid);
    timings.mark('spawn');
    const remote = RemoteSyscalls.open(stub.tracee, { insn: STUB_SYSCALL_ADDRESS });
    const ctx: RestoreContext = {
      pid: stub.pid,
      originalPid: state.pid,
      stub: stub.tracee,
      remote,
      source: image.source,
      cleanup,
      warn(message) {
        warnings.push(message);
        options.onWarning?.(message);
      },
    };

    bootstrap(ctx, image, options.prefill?.stagingRanges() ?? []);
    const staged: StagedContent =
      options.prefill?.moveIntoPlace(remote, state.vmas, remote.scratchRange!) ?? new Map();
    const filled = vmasToFill(image.pages, state.vmas);
    for (const v of staged.keys()) filled.add(v); // mapped writable, protected at the end like these
    const backings = prepareBackings(ctx, state.vmas);
    mapVmas(
      ctx,
      state.vmas.filter((v) => !staged.has(v)),
      filled,
      backings,
    );
    closeBackings(ctx, backings);
    timings.mark('layout');
    const pages = restorePages(ctx, image, state.vmas, staged);
    timings.mark('pages');
    protectVmas(ctx, filled);
    restoreMm(ctx, state.mm);
    restoreFiles({ ...ctx, terminal }, state.files);
    restoreFs(ctx, state.fs);
    restoreRlimits(ctx, state.rlimits);
    // The other threads share what is restored so far; IDs, names and credentials are each thread's.
    const tids = [stub.pid, ...cloneThreads(ctx, state.threads.slice(1), options.samePid ?? 'try')];
    const channels = tids.map((tid, i) => (i === 0 ? remote : remote.thread(tid)));
    state.threads.forEach((thread, i) => {
      const inThread = { ...ctx, remote: channels[i]! };
      restoreThread(inThread, thread);
      restoreCreds(inThread, state.creds);
    });
    restoreSignals(ctx, state.signals);
    // Held for a migration, it must not outlive the agent holding it (letRun() undoes this).
    if (options.stopped) remote.check('prctl(PR_SET_PDEATHSIG)', NR.prctl, PR.SET_PDEATHSIG, SIG.SIGKILL);
    for (const channel of channels.slice(1)) channel.close();
    remote.removeScratch();
    remote.close(); // before finishThread: closing puts back the mask the channel found
    timings.mark('state');
    state.threads.forEach((thread, i) => finishThread(ctx, thread, tids[i]!));
    // Queued while traced, the stop takes the process as soon as it leaves the ptrace stop.
    if (options.stopped) kill(stub.pid, SIG.SIGSTOP);
    stub.tracee.release();
    timings.mark('finish');
    return {
      pid: stub.pid,
      originalPid: state.pid,
      restoreMs: performance.now() - started,
      pages,
      warnings,
      stages: timings.toJSON(),
    };
  } catch (err) {
    stub?.tracee.kill();
    options.prefill?.abort();
    if (
      isFerryError(
        err,
        'FERRY_IMAGE_INCOMPATIBLE',
        'FERRY_IMAGE_CORRUPT',
        'FERRY_PID_TAKEN',
        'FERRY_RESTORE_FAILED',
      )
    )
      throw err;
    const why = err instanceof Error ? err.message : String(err);
    throw new FerryError(
      'FERRY_RESTORE_FAILED',
      `restore of ${dir} failed: ${why}; the new process was killed`,
      {
        cause: err,
      },
    );
  } finally {
    for (const step of cleanup) step();
  }
}
