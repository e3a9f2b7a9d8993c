// System calls run inside a frozen thread, two ways:
// - call(): point the thread at a `syscall` instruction it already has (in its [vdso], so its memory
//   is not modified) and step it through the entry and exit stops with PTRACE_SYSCALL;
// - batch(): run many calls through the executor (executor.ts) placed in a scratch region, with one
//   stop at its final int3. The int3 raises a forced SIGTRAP, so SIGTRAP stays unblocked while the
//   thread runs ferry's code (the kernel resets a blocked or ignored SIGTRAP's disposition when it
//   forces one; callers that find SIGTRAP ignored put it back with call()).
// Every other signal stays blocked (PTRACE_SETSIGMASK) until close(), so none is delivered midway.
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
} from '../sys/ptrace.js';
import { NO_RESTART, signed } from '../sys/regs.js';
import { SIG } from '../sys/signal.js';
import { waitpid, type WaitStatus } from '../sys/wait.js';
import { CALL_SIZE, EXECUTOR_CODE, EXECUTOR_END, EXECUTOR_SYSCALL, TABLE_HEADER } from './executor.js';
import type { Tracee } from './tracee.js';

const SYSCALL_INSN = Buffer.from([0x0f, 0x05]);
const SYSCALL_STOP = SIG.SIGTRAP | 0x80;
const SIGTRAP_BIT = 1n << BigInt(SIG.SIGTRAP - 1);
const ALL_BUT_SIGTRAP = ((1n << 64n) - 1n) & ~SIGTRAP_BIT;
const FORK_EVENTS = new Set<number>([PTRACE_EVENT.FORK, PTRACE_EVENT.VFORK, PTRACE_EVENT.CLONE]);

/** Layout of a scratch region: executor code, a call table of a quarter of it, then data. */
const CODE_BYTES = 256;
export const DEFAULT_SCRATCH_SIZE = 1 << 20;

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

function sigtrapState(pid: number, tid: number): { pending: boolean; ignored: boolean } {
  const thread = parseStatus(readProcText(pid, `task/${tid}/status`));
  return {
    pending: ((thread.sigPending | thread.sigShared) & SIGTRAP_BIT) !== 0n,
    ignored: (thread.sigIgnored & SIGTRAP_BIT) !== 0n,
  };
}

const SIGACTION_SIZE = 32;

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
}

/** A channel for running system calls in one frozen thread of a Tracee. */
export class RemoteSyscalls {
  /** Where call() points the thread: a `syscall` instruction in the tracee. */
  syscallInsn: bigint;
  /** PIDs of children created by fork-like calls, as ptrace reported them. */
  readonly children: number[] = [];
  private lastStop: 'event' | 'syscall' | 'trap' = 'event';
  private scratch: Scratch | undefined;
  /** The channel whose scratch region this one borrows (a channel on another thread). */
  private owner: RemoteSyscalls | undefined;
  private closed = false;
  /** SIGTRAP's action, to set again after the last batch (whose int3 may have reset it). */
  private sigtrapAction: Buffer | undefined;
  private sigtrapIgnored: boolean;

  private constructor(
    private readonly tracee: Tracee,
    readonly tid: number,
    insn: bigint,
    /** The thread's own signal mask, put back by close(). */
    readonly savedMask: bigint,
    private readonly batchable: boolean,
    sigtrapIgnored: boolean,
  ) {
    this.syscallInsn = insn;
    this.sigtrapIgnored = sigtrapIgnored;
  }

  /** Open on a thread of the tracee (its first by default); `insn` overrides the [vdso] search. */
  static open(tracee: Tracee, options: { tid?: number; insn?: bigint } = {}): RemoteSyscalls {
    const tid = options.tid ?? tracee.tids[0]!;
    const insn = options.insn ?? findSyscallInsn(tracee.pid, parseMaps(readProcText(tracee.pid, 'maps')));
    const savedMask = ptraceGetSigmask(tid);
    ptraceSetSigmask(tid, ALL_BUT_SIGTRAP);
    // A pending SIGTRAP would arrive in the middle of a batch: then run calls one by one.
    const sigtrap = sigtrapState(tracee.pid, tid);
    const remote = new RemoteSyscalls(tracee, tid, insn, savedMask, !sigtrap.pending, sigtrap.ignored);
    // Whatever happens, releasing the tracee first undoes what this channel did.
    tracee.onRelease(() => remote.undo());
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

  /** Run syscall `nr` with PTRACE_SYSCALL stops; returns the raw result (negative errno on failure). */
  call(nr: number, ...args: Word[]): bigint {
    this.assertOpen();
    this.flush();
    this.setCallRegs(this.syscallInsn, nr, args);
    this.step('entry');
    this.step('exit');
    this.lastStop = 'syscall';
    return signed(ptraceGetRegs(this.tid).rax);
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
    const size = options.size ?? DEFAULT_SCRATCH_SIZE;
    const flags = MAP.PRIVATE | MAP.ANONYMOUS | (options.at === undefined ? 0 : MAP.FIXED_NOREPLACE);
    const prot = PROT.READ | PROT.WRITE | PROT.EXEC;
    const base = this.check('mmap', NR.mmap, options.at ?? 0n, size, prot, flags, -1, 0);
    this.write(base, EXECUTOR_CODE);
    this.scratch = { base, size, tableBytes: size / 4, dataUsed: 0, unwritten: [] };
    return base;
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

  /** SIGTRAP's action to set once batches are over (a restore setting an ignored SIGTRAP). */
  deferSigtrapAction(action: Buffer): void {
    this.sigtrapAction = action;
  }

  /** Set SIGTRAP's action back if batches may have reset it, then unmap the scratch region. */
  removeScratch(): void {
    const s = this.requireScratch();
    if (this.sigtrapAction) {
      this.check('rt_sigaction(SIGTRAP)', NR.rt_sigaction, SIG.SIGTRAP, this.put(this.sigtrapAction), 0, 8);
      this.sigtrapAction = undefined;
    }
    this.check('munmap', NR.munmap, s.base, s.size);
    this.scratch = undefined;
  }

  /** Reserve `size` bytes of scratch data (until the enclosing withData() returns); returns their address. */
  alloc(size: number): bigint {
    const s = this.requireScratch();
    const offset = CODE_BYTES + s.tableBytes + s.dataUsed;
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
    return s.size - CODE_BYTES - s.tableBytes - s.dataUsed;
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
    if (!this.batchable || !this.scratch) return calls.map((c) => this.check(c.name, c.nr, ...c.args));
    if (this.sigtrapIgnored) {
      // The executor's int3 will reset an ignored SIGTRAP to SIG_DFL: keep its action to set it back.
      const out = this.alloc(SIGACTION_SIZE);
      this.check('rt_sigaction(SIGTRAP)', NR.rt_sigaction, SIG.SIGTRAP, 0, out, 8);
      // Dispositions are the process's: the channel that removes the scratch region sets it back.
      const keeper = this.owner ?? this;
      keeper.sigtrapAction ??= this.read(out, SIGACTION_SIZE);
      keeper.sigtrapIgnored = false;
      this.sigtrapIgnored = false;
    }
    const capacity = Math.floor((this.scratch.tableBytes - TABLE_HEADER) / CALL_SIZE);
    const results: bigint[] = [];
    for (let i = 0; i < calls.length; i += capacity)
      results.push(...this.runTable(calls.slice(i, i + capacity)));
    return results;
  }

  private runTable(calls: readonly RemoteCall[]): bigint[] {
    const s = this.scratch!;
    const tableAddr = s.base + BigInt(CODE_BYTES);
    const table = Buffer.alloc(TABLE_HEADER + calls.length * CALL_SIZE);
    table.writeBigUInt64LE(BigInt(calls.length), 0);
    calls.forEach((c, i) => {
      const at = TABLE_HEADER + i * CALL_SIZE;
      table.writeBigUInt64LE(BigInt(c.nr), at);
      c.args.forEach((a, j) => table.writeBigUInt64LE(BigInt.asUintN(64, BigInt(a)), at + 8 + j * 8));
      table.writeBigUInt64LE(NO_RESTART, at + 56); // "not run"
    });
    this.scratch!.unwritten.push({ addr: tableAddr, data: table });
    this.flush();
    this.tracee.setRegs(this.tid, {
      ...this.tracee.savedRegs(this.tid),
      rip: s.base,
      rdi: tableAddr,
      rsp: s.base + BigInt(CODE_BYTES),
      orig_rax: NO_RESTART,
    });
    ptraceCont(this.tid, 0);
    const status = waitpid(this.tid, 0);
    const rip = status?.kind === 'stopped' ? ptraceGetRegs(this.tid).rip : 0n;
    if (
      status?.kind !== 'stopped' ||
      status.signal !== SIG.SIGTRAP ||
      rip !== s.base + BigInt(EXECUTOR_END)
    ) {
      throw this.unexpected(status, 'batch end');
    }
    this.lastStop = 'trap';
    const back = this.read(tableAddr, table.length);
    const results = calls.map((_, i) => signed(back.readBigUInt64LE(TABLE_HEADER + i * CALL_SIZE + 56)));
    const failed = results.findIndex(isError);
    if (failed >= 0) throw this.failure(calls[failed]!.name, calls[failed]!.args, results[failed]!);
    return results;
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
   * Bring the thread back to an ordinary stop with its own registers and signal mask, so that on
   * release an interrupted syscall of its own restarts as if nothing happened. After a batch it is
   * already in a signal stop inside get_signal; after call() it is in a syscall-exit stop, from which
   * PTRACE_INTERRUPT leads it into an event stop before it returns to user space.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.lastStop === 'syscall') {
      ptraceInterrupt(this.tid);
      ptraceCont(this.tid, 0);
      const status = waitpid(this.tid, 0);
      if (status?.kind !== 'stopped' || status.event !== PTRACE_EVENT.STOP)
        throw this.unexpected(status, 'interrupt');
    }
    this.tracee.restoreRegs(this.tid);
    ptraceSetSigmask(this.tid, this.savedMask);
  }

  /** Remove the scratch region if still there, and close. */
  private undo(): void {
    if (this.closed) return;
    try {
      if (this.scratch && !this.owner) this.removeScratch();
    } finally {
      this.close();
    }
  }

  private setCallRegs(rip: bigint, nr: number, args: Word[]): void {
    const [rdi = 0n, rsi = 0n, rdx = 0n, r10 = 0n, r8 = 0n, r9 = 0n] = args.map((a) =>
      BigInt.asUintN(64, BigInt(a)),
    );
    this.tracee.setRegs(this.tid, {
      ...this.tracee.savedRegs(this.tid),
      rax: BigInt(nr),
      rdi,
      rsi,
      rdx,
      r10,
      r8,
      r9,
      rip,
      orig_rax: NO_RESTART,
    });
  }

  /** Resume to the next syscall stop; fork-like events on the way are noted and passed. */
  private step(which: 'entry' | 'exit'): void {
    for (;;) {
      ptraceSyscall(this.tid, 0);
      const status = waitpid(this.tid, 0);
      if (status?.kind === 'stopped' && FORK_EVENTS.has(status.event)) {
        this.children.push(Number(ptraceGetEventMsg(this.tid)));
        continue;
      }
      if (status?.kind !== 'stopped' || status.signal !== SYSCALL_STOP)
        throw this.unexpected(status, `syscall ${which}`);
      return;
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
