// System calls run inside a frozen process: its registers are pointed at a `syscall` instruction
// it already has (in its [vdso], so its memory is not modified) and the thread is stepped through
// the syscall's entry and exit stops. PTRACE_SYSCALL is used rather than a breakpoint or a
// single step, both of which raise a forced SIGTRAP that resets a blocked or ignored SIGTRAP's
// disposition in the tracee.
import { FerryError } from '../errors.js';
import { parseMaps, type MapsEntry } from '../proc/maps.js';
import { readProcText } from '../proc/files.js';
import { SysError } from '../sys/errno.js';
import { MAP, PROT } from '../sys/mman.js';
import { NR } from '../sys/nr.js';
import { processVmReadv, processVmWritev } from '../sys/process-vm.js';
import {
  PTRACE_EVENT,
  ptraceCont,
  ptraceGetRegs,
  ptraceGetSigmask,
  ptraceInterrupt,
  ptraceSetSigmask,
  ptraceSyscall,
} from '../sys/ptrace.js';
import { signed } from '../sys/regs.js';
import { SIG } from '../sys/signal.js';
import { waitpid } from '../sys/wait.js';
import type { Tracee } from './tracee.js';

const SYSCALL_INSN = Buffer.from([0x0f, 0x05]);
const SYSCALL_STOP = SIG.SIGTRAP | 0x80;
const ALL_SIGNALS = (1n << 64n) - 1n;
const NO_RESTART = (1n << 64n) - 1n;
const PAGE = 4096;

export type Word = number | bigint;

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

/** A channel for running system calls in one frozen thread of a Tracee. */
export class RemoteSyscalls {
  private inSyscallStop = false;
  private closed = false;

  private constructor(
    private readonly tracee: Tracee,
    readonly tid: number,
    private readonly insn: bigint,
    private readonly savedMask: bigint,
  ) {}

  /** Open on the tracee's first thread; all its signals stay blocked until close(). */
  static open(tracee: Tracee, tid = tracee.tids[0]!): RemoteSyscalls {
    const insn = findSyscallInsn(tracee.pid, parseMaps(readProcText(tracee.pid, 'maps')));
    const savedMask = ptraceGetSigmask(tid);
    ptraceSetSigmask(tid, ALL_SIGNALS);
    return new RemoteSyscalls(tracee, tid, insn, savedMask);
  }

  /** Run syscall `nr`; returns the raw result (a negative errno on failure). */
  call(nr: number, ...args: Word[]): bigint {
    if (this.closed) throw new FerryError('FERRY_TRACE', 'remote syscall channel is closed');
    const [rdi = 0n, rsi = 0n, rdx = 0n, r10 = 0n, r8 = 0n, r9 = 0n] = args.map((a) =>
      BigInt.asUintN(64, BigInt(a)),
    );
    const base = this.tracee.savedRegs(this.tid);
    this.tracee.setRegs(this.tid, {
      ...base,
      rax: BigInt(nr),
      rdi,
      rsi,
      rdx,
      r10,
      r8,
      r9,
      rip: this.insn,
      orig_rax: NO_RESTART,
    });
    this.step('entry');
    this.step('exit');
    this.inSyscallStop = true;
    return signed(ptraceGetRegs(this.tid).rax);
  }

  /** Run syscall `nr` and throw a SysError naming it and the process if it fails. */
  check(name: string, nr: number, ...args: Word[]): bigint {
    const ret = this.call(nr, ...args);
    if (ret < 0n && ret >= -4095n) {
      const shown = args.map((a) => (typeof a === 'bigint' ? `0x${a.toString(16)}` : String(a)));
      throw new SysError(`${name} in process ${this.tracee.pid}`, shown, Number(-ret));
    }
    return ret;
  }

  /** Map `size` bytes of scratch memory in the tracee, run `fn` with its address, unmap it. */
  withScratch<T>(size: number, fn: (addr: bigint) => T): T {
    const len = Math.ceil(size / PAGE) * PAGE;
    const addr = this.check(
      'mmap',
      NR.mmap,
      0,
      len,
      PROT.READ | PROT.WRITE,
      MAP.PRIVATE | MAP.ANONYMOUS,
      -1,
      0,
    );
    try {
      return fn(addr);
    } finally {
      this.check('munmap', NR.munmap, addr, len);
    }
  }

  write(addr: bigint, data: Buffer): void {
    processVmWritev(this.tracee.pid, data, [{ addr, len: data.length }]);
  }

  read(addr: bigint, len: number): Buffer {
    const buf = Buffer.alloc(len);
    processVmReadv(this.tracee.pid, buf, [{ addr, len }]);
    return buf;
  }

  /**
   * Bring the thread back to an ordinary interrupt stop, with its own registers and signal mask,
   * so that on release an interrupted syscall of its own restarts as if nothing happened.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.inSyscallStop) {
      ptraceInterrupt(this.tid);
      ptraceCont(this.tid, 0);
      const status = waitpid(this.tid, 0);
      if (status?.kind !== 'stopped' || status.event !== PTRACE_EVENT.STOP)
        throw this.unexpected(status, 'interrupt');
    }
    this.tracee.restoreRegs(this.tid);
    ptraceSetSigmask(this.tid, this.savedMask);
  }

  private step(which: 'entry' | 'exit'): void {
    ptraceSyscall(this.tid, 0);
    const status = waitpid(this.tid, 0);
    if (status?.kind !== 'stopped' || status.signal !== SYSCALL_STOP)
      throw this.unexpected(status, `syscall ${which}`);
  }

  private unexpected(status: ReturnType<typeof waitpid>, waitingFor: string): FerryError {
    if (status && status.kind !== 'stopped') {
      return new FerryError(
        'FERRY_PROCESS_EXITED',
        `process ${this.tracee.pid} died during a remote syscall`,
      );
    }
    return new FerryError(
      'FERRY_TRACE',
      `thread ${this.tid} stopped unexpectedly (${JSON.stringify(status)}) while ferry waited for the ${waitingFor} stop`,
    );
  }
}
