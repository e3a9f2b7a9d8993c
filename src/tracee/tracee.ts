// A process frozen under ptrace: every thread seized and held in a ptrace stop until released.
// Whatever happens, `release()` (resume) or `kill()` must end a Tracee's life: a process is never
// left stopped or traced.
import { FerryError, isFerryError } from '../errors.js';
import { listThreads, readProcText } from '../proc/files.js';
import { parseStat, PF_KTHREAD } from '../proc/stat.js';
import { parseStatus } from '../proc/status.js';
import { closeSync } from 'node:fs';
import { isErrno } from '../sys/errno.js';
import { pidfdExited, pidfdOpen, pidfdSendSignal } from '../sys/pidfd.js';
import { faultPoint } from '../sys/fault.js';
import {
  PTRACE_EVENT,
  PTRACE_O,
  ptraceCont,
  ptraceDetach,
  ptraceGetRegs,
  ptraceGetSigmask,
  ptraceGetXstate,
  ptraceInterrupt,
  ptraceSeize,
  ptraceSetRegs,
  ptraceSetSigmask,
} from '../sys/ptrace.js';
import type { Regs } from '../sys/regs.js';
import type { TraceeWatch } from './watch.js';
import { kill, SIG } from '../sys/signal.js';
import { sleepMs } from '../sys/time.js';
import { waitpid, WNOHANG, type WaitStatus } from '../sys/wait.js';

/** Signals that put a whole process into group-stop. */
const STOP_SIGNALS = new Set<number>([SIG.SIGSTOP, SIG.SIGTSTP, SIG.SIGTTIN, SIG.SIGTTOU]);

export interface FreezeOptions {
  /** Give up if the threads have not all stopped by then (a thread in uninterruptible sleep). */
  timeoutMs?: number;
  /**
   * A process of ferry's own (a restore stub), which dies with ferry: remote calls in it need no
   * way back should ferry go away (remote.ts).
   */
  disposable?: boolean;
  /** Hears what the tracee cannot be given (remote.ts). */
  onWarning?: (message: string) => void;
  /** Told what ferry is about to do to the process, should ferry die (watch.ts). */
  watch?: TraceeWatch;
}

interface ThreadState {
  tid: number;
  /** Registers as found when the thread stopped: what it gets back on release. */
  regs: Regs;
  /** Registers were changed (remote syscalls) and must be put back. */
  dirty: boolean;
  /** The xsave area, once read. */
  xstate?: Buffer;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const ALL_SIGNALS = (1n << 64n) - 1n;
/** How long a killed process may take to be gone (its threads torn down). */
const KILL_WAIT_MS = 5000;

export class Tracee {
  private readonly threads = new Map<number, ThreadState>();
  /** 'held' until every thread is let go (released) or the process is killed. */
  private state: 'held' | 'released' | 'killed' = 'held';
  /** A handle on the process, so that a kill never reaches another that got its PID since. */
  private pidfd: number | undefined;
  /** Undo steps of those who changed the process (remote syscall channels), run before release. */
  private readonly releaseHooks: (() => void)[] = [];
  /**
   * The signal that had the process in group-stop (SIGSTOP, SIGTSTP, ...) when seized, if one
   * had: it stays stopped on release.
   */
  stopSignal: number | undefined;
  /** A SIGSTOP is queued by fence(). */
  private fenced = false;
  /** unfence() could not take the SIGSTOP back: release() continues the process after. */
  private continueOnRelease = false;
  /** prepareRelease() is done: only the detaching is left. */
  private prepared = false;
  /** PTRACE_O_* options each thread is seized with. */
  private seizeOptions: number = PTRACE_O.TRACESYSGOOD;

  private constructor(
    readonly pid: number,
    /** See FreezeOptions.disposable. */
    readonly disposable: boolean,
    readonly warn: (message: string) => void = () => {},
    readonly watch?: TraceeWatch,
  ) {}

  /**
   * Seize and stop every thread of `pid`. Threads created while this runs are found by listing
   * /proc/PID/task again until the list holds still. On failure nothing stays traced.
   */
  static freeze(pid: number, options: FreezeOptions = {}): Tracee {
    const tracee = new Tracee(pid, options.disposable ?? false, options.onWarning, options.watch);
    // Under seccomp, what ferry runs inside the process must not meet its filters.
    tracee.seizeOptions |=
      parseStatus(readProcText(pid, 'status')).seccomp !== 0 ? PTRACE_O.SUSPEND_SECCOMP : 0;
    if (tracee.watch) tracee.watch.hold(pid, parseStat(readProcText(pid, 'stat')).startTime);
    const deadline = Date.now() + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    const seized = new Set<number>();
    try {
      for (;;) {
        const fresh = listThreads(pid).filter((tid) => !seized.has(tid));
        if (fresh.length === 0) break;
        for (const tid of fresh) if (tracee.seizeThread(tid)) seized.add(tid);
        for (const tid of fresh) if (seized.has(tid)) tracee.awaitStop(tid, deadline);
      }
      if (tracee.threads.size === 0) throw exited(pid);
      tracee.pidfd = pidfdOpen(pid);
      faultPoint('frozen');
      return tracee;
    } catch (err) {
      tracee.detachAll(seized);
      tracee.watch?.release(pid);
      throw mapExit(pid, err);
    }
  }

  /**
   * Take over a process ptrace attached to us by itself (the child of a traced fork in a restore
   * stub, disposable as the stub is): wait for its first stop and hold it there.
   */
  static adopt(pid: number, options: FreezeOptions = {}): Tracee {
    const tracee = new Tracee(pid, true);
    try {
      tracee.awaitStop(pid, Date.now() + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS));
      if (tracee.threads.size === 0) throw exited(pid);
      tracee.pidfd = pidfdOpen(pid);
      return tracee;
    } catch (err) {
      tracee.detachAll(new Set([pid]));
      throw mapExit(pid, err);
    }
  }

  /**
   * Hold a thread the process just made under our tracing (PTRACE_O_TRACECLONE): wait for its
   * first stop, before it runs any instruction.
   */
  adoptThread(tid: number, options: FreezeOptions = {}): void {
    this.awaitStop(tid, Date.now() + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS));
    if (!this.threads.has(tid)) throw exited(this.pid);
  }

  /** Thread IDs, the thread-group leader first. */
  get tids(): number[] {
    return [...this.threads.keys()].sort((a, b) => (a === this.pid ? -1 : b === this.pid ? 1 : a - b));
  }

  /** The registers a thread had when frozen. */
  savedRegs(tid: number): Regs {
    return this.thread(tid).regs;
  }

  /** The xsave area (FPU, SSE, AVX, ...) a thread had when frozen. */
  savedXstate(tid: number): Buffer {
    const t = this.thread(tid);
    t.xstate ??= ptraceGetXstate(tid);
    return t.xstate;
  }

  /** Set a thread's live registers; they are put back to the saved ones on release. */
  setRegs(tid: number, regs: Regs): void {
    this.thread(tid).dirty = true;
    ptraceSetRegs(tid, regs);
  }

  /** Registers the thread gets on release, instead of those it had when frozen (a restore). */
  replaceSavedRegs(tid: number, regs: Regs): void {
    const t = this.thread(tid);
    t.regs = regs;
    t.dirty = true;
  }

  /** Put a thread's saved registers back now (after remote syscalls). */
  restoreRegs(tid: number): void {
    const t = this.thread(tid);
    if (t.dirty) ptraceSetRegs(tid, t.regs);
    t.dirty = false;
  }

  /** Run `hook` before release, to undo what was done to the process. */
  onRelease(hook: () => void): void {
    this.releaseHooks.push(hook);
  }

  /**
   * Undo what was done inside the process (release hooks) and give every thread the registers it
   * resumes with, all while still held: what fails here (a value the kernel refuses) leaves the
   * process held, for kill(). Safe to call more than once; release() calls it.
   */
  prepareRelease(): void {
    if (this.state !== 'held' || this.prepared) return;
    let first: Error | undefined;
    for (const hook of this.releaseHooks.splice(0).reverse()) {
      try {
        hook();
      } catch (err) {
        first ??= err instanceof Error ? err : new Error(String(err));
      }
    }
    for (const tid of this.tids) {
      try {
        this.restoreRegs(tid);
      } catch (err) {
        // A thread that exited meanwhile needs no registers; anything else is reported after the rest.
        if (!isErrno(err, 'ESRCH')) first ??= err instanceof Error ? err : new Error(String(err));
      }
    }
    if (first) throw first;
    this.prepared = true;
  }

  /**
   * Undo what was done inside the process, then resume every thread where it was and stop tracing
   * (prepareRelease(), then detach). Safe to call more than once. Should prepareRelease() fail, the
   * error is thrown and the process stays held: kill() still kills it.
   */
  release(): void {
    if (this.state !== 'held') return;
    this.prepareRelease();
    for (const tid of this.tids) {
      try {
        ptraceDetach(tid, 0);
      } catch (err) {
        if (!isErrno(err, 'ESRCH')) throw err;
      }
    }
    this.state = 'released';
    if (this.continueOnRelease && this.pidfd !== undefined) pidfdSendSignal(this.pidfd, SIG.SIGCONT);
    this.closePidfd();
    this.watch?.release(this.pid);
  }

  /**
   * Queue a SIGSTOP for the process. Traced, it stays where it is; should ferry die now, the kernel
   * lets go of it and it stops on its way out of its ptrace stop, before it runs an instruction,
   * and stays stopped (a group-stop outlives the tracer): the fence a migration puts up before it
   * tells the target to run its copy.
   */
  fence(): void {
    if (this.fenced) return;
    if (this.pidfd === undefined) kill(this.pid, SIG.SIGSTOP);
    else pidfdSendSignal(this.pidfd, SIG.SIGSTOP);
    this.fenced = true;
  }

  /**
   * Take the SIGSTOP fence() queued back, so that release() lets the process run: the leader, every
   * other signal blocked for the while, dequeues it into a signal-delivery stop, whose signal the
   * release discards.
   */
  unfence(): void {
    if (!this.fenced) return;
    this.fenced = false;
    if (this.stopSignal !== undefined) return; // stopped before ferry came: it stays so anyway
    try {
      const mask = ptraceGetSigmask(this.pid);
      ptraceSetSigmask(this.pid, ALL_SIGNALS);
      try {
        for (;;) {
          ptraceCont(this.pid, 0);
          const status = waitWithDeadline(this.pid, Date.now() + DEFAULT_TIMEOUT_MS, this.pid);
          if (status.kind !== 'stopped') return; // it died: nothing to let run
          if (status.event === 0 && status.signal === SIG.SIGSTOP) return;
          // An event stop on the way (an interrupt): on again.
        }
      } finally {
        ptraceSetSigmask(this.pid, mask);
      }
    } catch {
      // The stop is taken as the process is let go: a SIGCONT after the release ends it.
      this.continueOnRelease = true;
    }
  }

  /**
   * Kill the process (all threads) and stop tracing it; returns once it is dead. Also after a
   * release() that failed midway.
   */
  kill(): void {
    if (this.state !== 'held') return;
    this.state = 'killed';
    // A process the caller started itself (Node's child_process, say) is the caller's to reap: were
    // it reaped here, the caller would wait for its exit for ever. The pidfd tells it is gone.
    const callers = !this.disposable && this.pidfd !== undefined && this.parent() === process.pid;
    try {
      if (this.pidfd === undefined) kill(this.pid, SIG.SIGKILL);
      else pidfdSendSignal(this.pidfd, SIG.SIGKILL);
    } catch (err) {
      if (!isErrno(err, 'ESRCH')) throw err;
    }
    // The leader's exit is reported only once every other thread is reaped: it goes last.
    for (const tid of this.tids.reverse()) {
      if (callers && tid === this.pid) continue;
      try {
        waitpid(tid, 0);
      } catch (err) {
        if (!isErrno(err, 'ECHILD', 'ESRCH')) throw err;
      }
    }
    const dead = this.pidfd === undefined || pidfdExited(this.pidfd, KILL_WAIT_MS);
    this.closePidfd();
    if (!dead) throw new FerryError('FERRY_INTERNAL', `process ${this.pid} did not die of SIGKILL`);
    this.watch?.release(this.pid);
  }

  /** The process's parent, or undefined once it is gone. */
  private parent(): number | undefined {
    try {
      return parseStat(readProcText(this.pid, 'stat')).ppid;
    } catch {
      return undefined;
    }
  }

  private closePidfd(): void {
    if (this.pidfd !== undefined) closeSync(this.pidfd);
    this.pidfd = undefined;
  }

  private thread(tid: number): ThreadState {
    const t = this.threads.get(tid);
    if (!t) throw new FerryError('FERRY_TRACE', `thread ${tid} of process ${this.pid} is not frozen`);
    return t;
  }

  /** Seize one thread and ask it to stop; false when it is already gone. */
  private seizeThread(tid: number): boolean {
    try {
      ptraceSeize(tid, this.seizeOptions);
      ptraceInterrupt(tid);
      return true;
    } catch (err) {
      if (isErrno(err, 'ESRCH')) return false;
      if (isErrno(err, 'EPERM')) throw permissionError(this.pid, err);
      throw err;
    }
  }

  /**
   * Wait until `tid` reports the stop PTRACE_INTERRUPT asked for. A signal that arrives first is
   * delivered (as it would have been) and the interrupt asked again.
   */
  private awaitStop(tid: number, deadline: number): void {
    for (;;) {
      const status = waitWithDeadline(tid, deadline, this.pid);
      if (status.kind !== 'stopped') return; // the thread exited: not ours to resume
      if (status.event === PTRACE_EVENT.STOP) {
        if (STOP_SIGNALS.has(status.signal)) this.stopSignal = status.signal;
        this.threads.set(tid, { tid, regs: ptraceGetRegs(tid), dirty: false });
        return;
      }
      const deliver = status.event === 0 ? status.signal : 0;
      ptraceCont(tid, deliver);
      ptraceInterrupt(tid);
    }
  }

  /** Best-effort release of threads seized before a failure: stopped ones are detached at once. */
  private detachAll(seized: Set<number>): void {
    for (const tid of seized) {
      try {
        if (!this.threads.has(tid)) {
          ptraceInterrupt(tid);
          waitWithDeadline(tid, Date.now() + 1000, this.pid);
        }
        ptraceDetach(tid, 0);
      } catch {
        // Gone already, or still running: the kernel detaches it when this process exits.
      }
    }
    this.state = 'released';
  }
}

/** waitpid on one thread, polling so that a thread stuck in the kernel cannot hang ferry. */
function waitWithDeadline(tid: number, deadline: number, pid: number): WaitStatus {
  for (let pause = 0.05; ; pause = Math.min(pause * 2, 5)) {
    const status = waitpid(tid, WNOHANG);
    if (status) return status;
    if (Date.now() > deadline) {
      throw new FerryError(
        'FERRY_TRACE',
        `thread ${tid} of process ${pid} did not stop in time (it may be in uninterruptible sleep, state D)`,
      );
    }
    sleepMs(pause);
  }
}

function exited(pid: number): FerryError {
  return new FerryError('FERRY_PROCESS_EXITED', `process ${pid} exited while ferry was freezing it`);
}

/** PF_EXITING in the stat flags: the task is on its way out. */
const PF_EXITING = 0x4;

/** Why PTRACE_SEIZE said EPERM: a kernel thread, a process exiting meanwhile, or no right to. */
function permissionError(pid: number, cause: unknown): FerryError {
  let detail = '';
  try {
    const stat = parseStat(readProcText(pid, 'stat'));
    if (stat.flags & PF_KTHREAD) detail = ': it is a kernel thread';
    else if (stat.flags & PF_EXITING || stat.state === 'Z' || stat.state === 'X') return exited(pid);
  } catch (err) {
    if (isFerryError(err, 'FERRY_NO_SUCH_PROCESS')) return exited(pid);
    // the reason stays generic
  }
  return new FerryError(
    'FERRY_PERMISSION',
    `may not trace process ${pid}${detail || ' (run as root or with CAP_SYS_PTRACE; it may be traced already)'}`,
    { cause },
  );
}

/** A thread that vanished mid-freeze means the process is exiting. */
function mapExit(pid: number, err: unknown): unknown {
  if (isErrno(err, 'ESRCH', 'ECHILD')) return exited(pid);
  return err;
}
