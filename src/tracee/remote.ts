// System calls run inside a frozen thread, through the batch executor (executor.ts) placed in a
// scratch region of the process: a table of calls per resume, ended by a tgkill of the thread to
// itself that ptrace reports (or, where no signal may be used, by stepping from syscall stop to
// syscall stop). Before a scratch region exists, a call steps a `syscall` instruction the thread
// already has (in its [vdso], so its memory is not modified).
//
// A live process's channel is *guarded*: whatever ferry is doing, should ferry die (SIGKILL, the
// OOM killer) the thread's next instruction in user space leads to `rt_sigreturn` on a frame that
// gives it back its own registers, signal mask and xstate (sigframe.ts), and a once-only cleanup
// closes what ferry had opened in the process. Each thread's rescue frame is in the scratch region
// (its address in r15 whenever the thread runs ferry's code); mapping and unmapping that region go
// through the process's own sigreturn trampoline with a frame on the thread's stack (guard.ts).
// The signal ending a batch is one the process ignores, so that it is discarded should ferry be
// gone. A restore stub's channel (Tracee.disposable) needs none of this: the stub dies with ferry.
// Every other signal stays blocked (PTRACE_SETSIGMASK) while the thread runs ferry's code.
import { FerryError } from '../errors.js';
import { readProcText } from '../proc/files.js';
import { parseMaps, type MapsEntry } from '../proc/maps.js';
import { parseStatus } from '../proc/status.js';
import { SysError } from '../sys/errno.js';
import { MAP, PROT } from '../sys/mman.js';
import { NR } from '../sys/nr.js';
import { IOV_MAX, processVmReadv, processVmWritev } from '../sys/process-vm.js';
import {
  PTRACE_EVENT,
  ptraceCont,
  ptraceGetEventMsg,
  ptraceGetRegs,
  ptraceGetSigmask,
  ptraceInterrupt,
  ptraceSetSigmask,
  ptraceSyscall,
  ptraceSyscallStop,
} from '../sys/ptrace.js';
import { NO_RESTART, signed, type Regs } from '../sys/regs.js';
import { SIG } from '../sys/signal.js';
import { waitpid, type WaitStatus } from '../sys/wait.js';
import {
  CALL_SIZE,
  CLEANUP_MAX,
  CLEANUP_OFFSET,
  encodeCalls,
  EXECUTOR_BYTES,
  EXECUTOR_CODE,
  EXECUTOR_END,
  EXECUTOR_RESCUE,
  EXECUTOR_SYSCALL,
  TABLE_HEADER,
} from './executor.js';
import { findGap } from '../vma/gaps.js';
import { findSigreturnGadget, StackFrame } from './guard.js';
import { encodeSigframe, SIGFRAME_ALIGN, sigframeSize } from './sigframe.js';
import type { Tracee } from './tracee.js';

const SYSCALL_INSN = Buffer.from([0x0f, 0x05]);
const SYSCALL_STOP = SIG.SIGTRAP | 0x80;
const ALL_SIGNALS = (1n << 64n) - 1n;
const FORK_EVENTS = new Set<number>([PTRACE_EVENT.FORK, PTRACE_EVENT.VFORK, PTRACE_EVENT.CLONE]);
const sigBit = (signal: number): bigint => 1n << BigInt(signal - 1);

/** Signals ignored unless caught: one of them ends a guarded batch, when the process catches none. */
const DEFAULT_IGNORED: readonly number[] = [SIG.SIGURG, SIG.SIGWINCH, SIG.SIGCHLD];

export const DEFAULT_SCRATCH_SIZE = 1 << 20;
const PAGE = 0x1000n;
/** The scratch region a guarded channel maps when a call needs one and none was installed. */
const GUARDED_SCRATCH_SIZE = 1 << 16;

export type Word = number | bigint;

export interface RemoteCall {
  /** The call's name, for error messages. */
  name: string;
  nr: number;
  args: Word[];
}

/** Find a `syscall` instruction in the [vdso], or else in any readable executable mapping. */
export function findSyscallInsn(pid: number, maps: readonly MapsEntry[]): bigint {
  const candidates = [
    ...maps.filter((m) => m.name === '[vdso]'),
    ...maps.filter((m) => m.name !== '[vdso]' && m.perms.startsWith('r-x')),
  ];
  for (const m of candidates) {
    const len = Number(m.end - m.start < 1n << 20n ? m.end - m.start : 1n << 20n);
    const buf = Buffer.alloc(len);
    const got = processVmReadv(pid, buf, [{ addr: m.start, len }]);
    const at = buf.subarray(0, got).indexOf(SYSCALL_INSN);
    if (at >= 0) return m.start + BigInt(at);
  }
  throw new FerryError('FERRY_UNSUPPORTED', `process ${pid} has no syscall instruction ferry can borrow`);
}

/**
 * How a batch hands control back: a signal the thread sends itself (0: by stepping instead). A
 * disposable channel uses SIGTRAP; a guarded one a signal the process ignores, so that without
 * ferry it is discarded; either one that is not pending already.
 */
function endingSignal(pid: number, tid: number, guarded: boolean): number {
  const s = parseStatus(readProcText(pid, `task/${tid}/status`));
  const pending = s.sigPending | s.sigShared;
  const usable = (signal: number): boolean => !(pending & sigBit(signal));
  if (!guarded) return usable(SIG.SIGTRAP) ? SIG.SIGTRAP : 0;
  const ignored = (signal: number): boolean =>
    !!(s.sigIgnored & sigBit(signal)) ||
    (DEFAULT_IGNORED.includes(signal) && !(s.sigCaught & sigBit(signal)));
  for (let signal = 1; signal <= 64; signal++) {
    if (signal === SIG.SIGKILL || signal === SIG.SIGSTOP || signal === SIG.SIGCONT) continue;
    if (ignored(signal) && usable(signal)) return signal;
  }
  return 0;
}

interface FrameSlot {
  at: bigint;
  size: number;
  used: boolean;
}

interface Scratch {
  base: bigint;
  size: number;
  tableBytes: number;
  dataUsed: number;
  /**
   * What put() placed and no call has needed yet: written all at once (one process_vm_writev
   * instead of one per piece) before the process next runs or its memory is read. Shared by the
   * channels on the region, since one may put what another's call reads.
   */
  unwritten: { addr: bigint; data: Buffer }[];
  /** Rescue frames of guarded channels, reused once their channel closes. */
  frames: FrameSlot[];
  /** The rescue's cleanup calls (guarded). */
  cleanup: RemoteCall[];
}

/** A channel for running system calls in one frozen thread of a Tracee. */
export class RemoteSyscalls {
  /** Where a call without scratch region points the thread: a `syscall` instruction in the tracee. */
  syscallInsn: bigint;
  /** PIDs of children created by fork-like calls, as ptrace reported them. */
  readonly children: number[] = [];
  private lastStop: 'event' | 'syscall' | 'signal' = 'event';
  private scratch: Scratch | undefined;
  /** The channel whose scratch region this one borrows (a channel on another thread). */
  private owner: RemoteSyscalls | undefined;
  private closed = false;
  /** The mask the thread has now, when ferry changed it. */
  private mask: bigint | undefined;
  /** This thread's rescue frame (guarded). */
  private frame: FrameSlot | undefined;
  /** Stack bytes under a frame placed for the scratch region's teardown: put back at close(). */
  private stackFrame: StackFrame | undefined;
  private readonly guarded: boolean;
  private readonly endSignal: number;

  private constructor(
    private readonly tracee: Tracee,
    readonly tid: number,
    insn: bigint,
    /** The thread's own signal mask, put back by close(). */
    readonly savedMask: bigint,
  ) {
    this.syscallInsn = insn;
    this.guarded = !tracee.disposable;
    this.endSignal = endingSignal(tracee.pid, tid, this.guarded);
  }

  /** Open on a thread of the tracee (its first by default); `insn` overrides the [vdso] search. */
  static open(tracee: Tracee, options: { tid?: number; insn?: bigint } = {}): RemoteSyscalls {
    const tid = options.tid ?? tracee.tids[0]!;
    const insn = options.insn ?? findSyscallInsn(tracee.pid, parseMaps(readProcText(tracee.pid, 'maps')));
    const remote = new RemoteSyscalls(tracee, tid, insn, ptraceGetSigmask(tid));
    // Whatever happens, releasing the tracee first undoes what this channel did.
    tracee.onRelease(() => remote.close());
    return remote;
  }

  /**
   * A channel on another thread of the same process, for calls that act on the calling thread. It
   * shares this channel's scratch region, which stays this channel's to remove; close it first.
   */
  thread(tid: number): RemoteSyscalls {
    const remote = RemoteSyscalls.open(this.tracee, { tid, insn: this.syscallInsn });
    remote.scratch = this.requireScratch();
    remote.owner = this;
    return remote;
  }

  get pid(): number {
    return this.tracee.pid;
  }

  /**
   * Run syscall `nr`; returns the raw result (negative errno on failure). A guarded channel runs it
   * as a batch of one; a disposable one steps it at syscallInsn, whatever else is mapped.
   */
  call(nr: number, ...args: Word[]): bigint {
    this.assertOpen();
    if (!this.guarded) return this.callAtInsn(nr, args);
    this.ensureScratch();
    return this.runTable([{ name: '', nr, args }])[0]!;
  }

  /** Run syscall `nr` and throw a SysError naming it and the process if it fails. */
  check(name: string, nr: number, ...args: Word[]): bigint {
    const ret = this.call(nr, ...args);
    if (isError(ret)) throw this.failure(name, args, ret);
    return ret;
  }

  /**
   * Map a scratch region (read, write, execute) holding the batch executor, at `at` (which must be
   * free) or where the kernel chooses. Returns its address.
   */
  installScratch(options: { at?: bigint; size?: number } = {}): bigint {
    this.assertOpen();
    const size = options.size ?? DEFAULT_SCRATCH_SIZE;
    // A guarded region goes where ferry chose, so that a watch knows where before it is made.
    const at = options.at ?? (this.guarded ? this.freeRoom(size) : undefined);
    const flags = MAP.PRIVATE | MAP.ANONYMOUS | (at === undefined ? 0 : MAP.FIXED_NOREPLACE);
    const args = [at ?? 0n, size, PROT.READ | PROT.WRITE | PROT.EXEC, flags, -1, 0];
    if (at !== undefined) this.tracee.watch?.scratch(this.tracee.pid, at, size);
    const ret = this.guarded ? this.viaTrampoline(NR.mmap, args) : this.call(NR.mmap, ...args);
    if (isError(ret)) {
      this.tracee.watch?.unscratch(this.tracee.pid);
      throw this.failure('mmap', args, ret);
    }
    const base = ret;
    this.scratch = {
      base,
      size,
      tableBytes: Math.max((size - EXECUTOR_BYTES) / 4, TABLE_HEADER + CALL_SIZE),
      dataUsed: 0,
      unwritten: [{ addr: base, data: EXECUTOR_CODE }],
      frames: [],
      cleanup: [],
    };
    this.writeCleanup();
    if (this.guarded) {
      // From here on the thread's way back is its frame in the region, written before the thread
      // is pointed at it, not the one on its stack.
      this.useFrame();
      this.flush();
      this.tracee.setRegs(this.tid, this.ourRegs(base + BigInt(EXECUTOR_RESCUE)));
      this.stackFrame?.restore();
      this.stackFrame = undefined;
    }
    return base;
  }

  /**
   * A free, page-aligned stretch of `size` bytes in the process's address space, a page away from
   * any mapping: next to one with the same protections, the kernel would merge the two.
   */
  private freeRoom(size: number): bigint {
    const taken = parseMaps(readProcText(this.tracee.pid, 'maps')).map((m) => ({
      start: m.start - PAGE,
      end: m.end + PAGE,
    }));
    const at = findGap(taken, BigInt(size), PAGE);
    if (at === undefined)
      throw new FerryError('FERRY_INTERNAL', `no room for ${size} bytes in process ${this.tracee.pid}`);
    return at;
  }

  /** The scratch region, if one is installed. */
  get scratchRange(): { start: bigint; end: bigint } | undefined {
    const s = this.scratch;
    return s && { start: s.base, end: s.base + BigInt(s.size) };
  }

  /** Address of the executor's own syscall instruction (for call() once other code is gone). */
  get executorSyscall(): bigint {
    return this.requireScratch().base + BigInt(EXECUTOR_SYSCALL);
  }

  /** Unmap the scratch region. */
  removeScratch(): void {
    const s = this.requireScratch();
    if (s.cleanup.length > 0) throw new FerryError('FERRY_INTERNAL', 'scratch removed with cleanup pending');
    const args = [s.base, s.size];
    const ret = this.guarded ? this.viaTrampoline(NR.munmap, args) : this.callAtInsn(NR.munmap, args);
    this.scratch = undefined;
    this.frame = undefined;
    if (isError(ret)) throw this.failure('munmap', args, ret);
    this.tracee.watch?.unscratch(this.tracee.pid);
  }

  /**
   * Have the rescue run `call` should ferry go away from now on (closing a descriptor ferry made in
   * the process, say); the returned function takes it back.
   */
  onRescue(call: RemoteCall): () => void {
    const s = this.requireScratch();
    if (s.cleanup.length >= CLEANUP_MAX)
      throw new FerryError('FERRY_INTERNAL', 'rescue cleanup table is full');
    s.cleanup.push(call);
    this.writeCleanup();
    return () => {
      s.cleanup.splice(s.cleanup.indexOf(call), 1);
      if (this.scratch === s) this.writeCleanup();
    };
  }

  /** Reserve `size` bytes of scratch data (until the enclosing withData() returns); returns their address. */
  alloc(size: number): bigint {
    const s = this.requireScratch();
    const offset = EXECUTOR_BYTES + s.tableBytes + s.dataUsed;
    const aligned = (size + 15) & ~15;
    if (offset + aligned > s.size) throw new FerryError('FERRY_INTERNAL', 'remote scratch data area is full');
    s.dataUsed += aligned;
    return s.base + BigInt(offset);
  }

  /** Copy `data` into scratch memory by the time a call runs (leave it unchanged until then); returns its address. */
  put(data: Buffer): bigint {
    const addr = this.alloc(data.length);
    this.scratch!.unwritten.push({ addr, data });
    return addr;
  }

  /** Write what put() left unwritten. */
  private flush(): void {
    const pending = this.scratch?.unwritten;
    while (pending && pending.length > 0) {
      const pieces = pending.splice(0, IOV_MAX);
      processVmWritev(
        this.tracee.pid,
        Buffer.concat(pieces.map((p) => p.data)),
        pieces.map((p) => ({ addr: p.addr, len: p.data.length })),
      );
    }
  }

  /** A NUL-terminated string in scratch memory. */
  putString(text: string): bigint {
    return this.put(Buffer.from(`${text}\0`));
  }

  /** Bytes of scratch data still free. */
  get dataFree(): number {
    const s = this.requireScratch();
    return s.size - EXECUTOR_BYTES - s.tableBytes - s.dataUsed;
  }

  /** Run `fn`; scratch data it reserves is free again afterwards. */
  withData<T>(fn: () => T): T {
    const s = this.requireScratch();
    const used = s.dataUsed;
    try {
      return fn();
    } finally {
      s.dataUsed = used;
    }
  }

  /**
   * Run the calls in order, stopping at the first that fails, which is thrown as a SysError.
   * Returns each call's result.
   */
  batch(calls: readonly RemoteCall[]): bigint[] {
    this.assertOpen();
    if (this.guarded) this.ensureScratch();
    if (!this.scratch) return calls.map((c) => this.check(c.name, c.nr, ...c.args));
    const capacity = Math.floor((this.scratch.tableBytes - TABLE_HEADER) / CALL_SIZE);
    const results: bigint[] = [];
    for (let i = 0; i < calls.length; i += capacity) {
      const part = calls.slice(i, i + capacity);
      const got = this.runTable(part);
      const failed = got.findIndex(isError);
      if (failed >= 0) throw this.failure(part[failed]!.name, part[failed]!.args, got[failed]!);
      results.push(...got);
    }
    return results;
  }

  /** Run a table of calls (to the first failure); each call's raw result, unset ones NO_RESTART. */
  private runTable(calls: readonly RemoteCall[]): bigint[] {
    const s = this.scratch!;
    const tableAddr = s.base + BigInt(EXECUTOR_BYTES);
    const header = [BigInt(calls.length), BigInt(this.tracee.pid), BigInt(this.tid), BigInt(this.endSignal)];
    const table = encodeCalls(header, calls, NO_RESTART);
    s.unwritten.push({ addr: tableAddr, data: table });
    if (this.guarded) this.useFrame();
    this.flush();
    this.tracee.setRegs(this.tid, { ...this.ourRegs(s.base), rdi: tableAddr });
    this.blockSignals(this.endSignal === 0 ? ALL_SIGNALS : ALL_SIGNALS & ~sigBit(this.endSignal));
    const end = s.base + BigInt(EXECUTOR_END);
    if (this.endSignal !== 0) this.resumeUntilSignal(end);
    else this.step((stop, regs) => stop === 'entry' && regs.rip === end);
    const back = this.read(tableAddr, table.length);
    return calls.map((_, i) => signed(back.readBigUInt64LE(TABLE_HEADER + i * CALL_SIZE + 56)));
  }

  /** Resume; return at the stop for the signal that ends the batch (at `end`). */
  private resumeUntilSignal(end: bigint): void {
    for (;;) {
      ptraceCont(this.tid, 0);
      const status = waitpid(this.tid, 0);
      if (this.passOver(status)) continue;
      if (status?.kind === 'stopped' && status.event === 0 && status.signal === this.endSignal) {
        this.lastStop = 'signal';
        // The same signal sent from outside, while unblocked: it is ignored anyway.
        if (ptraceGetRegs(this.tid).rip === end) return;
        continue;
      }
      throw this.unexpected(status, 'batch end');
    }
  }

  write(addr: bigint, data: Buffer): void {
    this.flush();
    processVmWritev(this.tracee.pid, data, [{ addr, len: data.length }]);
  }

  read(addr: bigint, len: number): Buffer {
    this.flush();
    const buf = Buffer.alloc(len);
    processVmReadv(this.tracee.pid, buf, [{ addr, len }]);
    return buf;
  }

  /**
   * Undo what this channel did: run what the rescue would have (what a failed step left open),
   * remove the scratch region it mapped, and bring the thread back to an ordinary stop with its own
   * registers and signal mask, so that on release an interrupted syscall of its own restarts as if
   * nothing happened. After a batch it is already in a signal stop inside get_signal; after a
   * syscall stop, PTRACE_INTERRUPT leads it into an event stop before it returns to user space.
   */
  close(): void {
    if (this.closed) return;
    try {
      const s = this.scratch;
      if (s && !this.owner) {
        const cleanup = s.cleanup.splice(0);
        if (cleanup.length > 0) this.runTable(cleanup);
        this.removeScratch();
      }
    } finally {
      this.closed = true;
      this.settle();
    }
  }

  private settle(): void {
    if (this.lastStop === 'syscall') {
      ptraceInterrupt(this.tid);
      ptraceCont(this.tid, 0);
      const status = waitpid(this.tid, 0);
      if (status?.kind !== 'stopped' || status.event !== PTRACE_EVENT.STOP)
        throw this.unexpected(status, 'interrupt');
      this.lastStop = 'event';
    }
    this.tracee.restoreRegs(this.tid);
    if (this.mask !== undefined) ptraceSetSigmask(this.tid, this.savedMask);
    this.mask = undefined;
    if (this.frame) this.frame.used = false;
    this.frame = undefined;
    this.stackFrame?.restore();
    this.stackFrame = undefined;
  }

  /** A guarded channel maps its scratch region at its first call. */
  private ensureScratch(): void {
    if (this.scratch) return;
    if (this.owner) throw new FerryError('FERRY_INTERNAL', 'the scratch region is gone');
    this.installScratch({ size: GUARDED_SCRATCH_SIZE });
  }

  /** Registers that run ferry's code in the scratch region from `rip`, the rescue frame in r15. */
  private ourRegs(rip: bigint): Regs {
    const s = this.scratch!;
    return {
      ...this.tracee.savedRegs(this.tid),
      rip,
      rsp: s.base + BigInt(EXECUTOR_BYTES),
      r15: this.frame ? this.frame.at + 8n : 0n,
      orig_rax: NO_RESTART,
    };
  }

  /** Give this guarded channel a rescue frame in the scratch region, written before it is needed. */
  private useFrame(): void {
    if (this.frame) return;
    const s = this.scratch!;
    const xstate = this.tracee.savedXstate(this.tid);
    const size = sigframeSize(xstate);
    let slot = s.frames.find((f) => !f.used && f.size >= size);
    if (!slot) {
      const at = this.alloc(size + SIGFRAME_ALIGN);
      slot = { at: (at + BigInt(SIGFRAME_ALIGN - 1)) & ~BigInt(SIGFRAME_ALIGN - 1), size, used: false };
      s.frames.push(slot);
    }
    slot.used = true;
    this.frame = slot;
    const frame = encodeSigframe(slot.at, this.tracee.savedRegs(this.tid), this.savedMask, xstate);
    s.unwritten.push({ addr: slot.at, data: frame.bytes });
  }

  /** Put the rescue's cleanup table in the scratch region as it is now, before the next call. */
  private writeCleanup(): void {
    const s = this.scratch!;
    const table = encodeCalls([0n, BigInt(s.cleanup.length)], s.cleanup, 0n);
    s.unwritten.push({ addr: s.base + BigInt(CLEANUP_OFFSET), data: table });
  }

  /**
   * Run one call with no scratch region to fall back on (mapping or unmapping it): at the entry stop
   * of an rt_sigreturn on a frame below the thread's red zone, the call replaces it, and returns
   * into the process's own sigreturn trampoline. Should ferry go away at any point, the thread runs
   * one or the other sigreturn and is back in its own state. The frame stays until close().
   */
  private viaTrampoline(nr: number, args: Word[]): bigint {
    const pid = this.tracee.pid;
    const maps = parseMaps(readProcText(pid, 'maps'));
    const saved = this.tracee.savedRegs(this.tid);
    const xstate = this.tracee.savedXstate(this.tid);
    const gadget = findSigreturnGadget(pid, maps);
    const stack =
      gadget === undefined ? undefined : StackFrame.below(pid, saved.rsp, sigframeSize(xstate), maps);
    if (!stack) {
      this.tracee.warn(
        `process ${pid} has no ${gadget === undefined ? 'rt_sigreturn trampoline (libc, the Go runtime have one)' : `room on the stack of its thread ${this.tid}`}: ` +
          `were ferry killed while it maps or unmaps its scratch region there (about 0.1 ms), the process would die`,
      );
      return this.callAtInsn(nr, args);
    }
    this.stackFrame?.restore();
    this.stackFrame = stack;
    const frame = encodeSigframe(stack.at, saved, this.savedMask, xstate);
    stack.write(frame.bytes);
    this.setCallRegs({ rip: this.syscallInsn, rax: BigInt(NR.rt_sigreturn), rsp: frame.rsp }, []);
    this.blockSignals(ALL_SIGNALS);
    this.step((stop, regs) => stop === 'entry' && regs.orig_rax === BigInt(NR.rt_sigreturn));
    this.setCallRegs({ rip: gadget!, rsp: frame.rsp, orig_rax: BigInt(nr) }, args);
    this.step((stop) => stop === 'exit');
    return signed(ptraceGetRegs(this.tid).rax);
  }

  /** Step one call through syscallInsn. */
  private callAtInsn(nr: number, args: Word[]): bigint {
    this.flush();
    this.setCallRegs({ rip: this.syscallInsn, rax: BigInt(nr) }, args);
    this.blockSignals(ALL_SIGNALS);
    this.step((s) => s === 'entry');
    this.step((s) => s === 'exit');
    return signed(ptraceGetRegs(this.tid).rax);
  }

  private setCallRegs(set: Partial<Regs>, args: Word[]): void {
    const [rdi = 0n, rsi = 0n, rdx = 0n, r10 = 0n, r8 = 0n, r9 = 0n] = args.map((a) =>
      BigInt.asUintN(64, BigInt(a)),
    );
    this.tracee.setRegs(this.tid, {
      ...this.tracee.savedRegs(this.tid),
      rdi,
      rsi,
      rdx,
      r10,
      r8,
      r9,
      orig_rax: NO_RESTART,
      ...set,
    });
  }

  /** Set the thread's mask, once its registers lead back to its own (the rescue restores the mask). */
  private blockSignals(mask: bigint): void {
    if (this.mask === mask) return;
    ptraceSetSigmask(this.tid, mask);
    this.mask = mask;
  }

  /**
   * A stop on the way that the caller passes over, resuming: a fork-like event (the child is
   * noted), or the group-stop of a process that was stopped when frozen, which ptrace reports again
   * as its thread runs ferry's calls (it stays stopped once released).
   */
  private passOver(status: WaitStatus | null): boolean {
    if (status?.kind !== 'stopped') return false;
    if (status.event === PTRACE_EVENT.STOP) return this.tracee.stopSignal !== undefined;
    if (!FORK_EVENTS.has(status.event)) return false;
    this.children.push(Number(ptraceGetEventMsg(this.tid)));
    return true;
  }

  /** Resume from syscall stop to syscall stop until `done` says so. */
  private step(done: (stop: 'entry' | 'exit', regs: Regs) => boolean): void {
    for (;;) {
      ptraceSyscall(this.tid, 0);
      const status = waitpid(this.tid, 0);
      if (this.passOver(status)) continue;
      if (status?.kind !== 'stopped' || status.signal !== SYSCALL_STOP)
        throw this.unexpected(status, 'syscall');
      this.lastStop = 'syscall';
      const stop = ptraceSyscallStop(this.tid) === 'entry' ? 'entry' : 'exit';
      if (done(stop, ptraceGetRegs(this.tid))) return;
    }
  }

  private failure(name: string, args: Word[], ret: bigint): SysError {
    const shown = args.map((a) => (typeof a === 'bigint' ? `0x${a.toString(16)}` : String(a)));
    return new SysError(`${name} in process ${this.tracee.pid}`, shown, Number(-ret));
  }

  private requireScratch(): Scratch {
    if (!this.scratch) throw new FerryError('FERRY_INTERNAL', 'no remote scratch region is installed');
    return this.scratch;
  }

  private assertOpen(): void {
    if (this.closed) throw new FerryError('FERRY_INTERNAL', 'remote syscall channel is closed');
  }

  private unexpected(status: WaitStatus | null, waitingFor: string): FerryError {
    if (status && status.kind !== 'stopped') {
      return new FerryError(
        'FERRY_PROCESS_EXITED',
        `process ${this.tracee.pid} died while ferry was working inside it`,
      );
    }
    return new FerryError(
      'FERRY_TRACE',
      `thread ${this.tid} stopped unexpectedly (${JSON.stringify(status)}) while ferry waited for the ${waitingFor} stop`,
    );
  }
}

function isError(ret: bigint): boolean {
  return ret < 0n && ret >= -4095n;
}
