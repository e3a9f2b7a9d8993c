// ptrace(2): requests, options and events, and one typed wrapper per request ferry uses.
// Every call is synchronous on the calling thread, which must be the one that seized the tracee.
import { syscall } from './call.js';
import { isErrno } from './errno.js';
import { faultPoint } from './fault.js';
import { addressOf } from './libc.js';
import { NR } from './nr.js';
import { decodeRegs, encodeRegs, USER_REGS_SIZE, type Regs } from './regs.js';

export const PTRACE = {
  CONT: 7,
  KILL: 8,
  DETACH: 17,
  SYSCALL: 24,
  SETOPTIONS: 0x4200,
  GETEVENTMSG: 0x4201,
  GETSIGINFO: 0x4202,
  SETSIGINFO: 0x4203,
  GETREGSET: 0x4204,
  SETREGSET: 0x4205,
  SEIZE: 0x4206,
  INTERRUPT: 0x4207,
  LISTEN: 0x4208,
  PEEKSIGINFO: 0x4209,
  GETSIGMASK: 0x420a,
  SETSIGMASK: 0x420b,
  SECCOMP_GET_FILTER: 0x420c,
  SECCOMP_GET_METADATA: 0x420d,
  GET_SYSCALL_INFO: 0x420e,
  GET_RSEQ_CONFIGURATION: 0x420f,
} as const;

export type PtraceRequest = keyof typeof PTRACE;

/** PTRACE_O_* options for SEIZE / SETOPTIONS. */
export const PTRACE_O = {
  TRACESYSGOOD: 0x1,
  TRACEFORK: 0x2,
  TRACEVFORK: 0x4,
  TRACECLONE: 0x8,
  TRACEEXEC: 0x10,
  TRACEEXIT: 0x40,
  EXITKILL: 0x100000,
  /** seccomp does not apply to the tracee while it is traced (CAP_SYS_ADMIN). */
  SUSPEND_SECCOMP: 0x200000,
} as const;

/** PTRACE_EVENT_* values found in bits 16..23 of a wait status. */
export const PTRACE_EVENT = {
  FORK: 1,
  VFORK: 2,
  CLONE: 3,
  EXEC: 4,
  EXIT: 6,
  STOP: 128,
} as const;

/** ELF note types for GETREGSET/SETREGSET. */
export const NT = { PRSTATUS: 1, X86_XSTATE: 0x202 } as const;

/** Upper bound of the x86 xsave area (AVX-512 with AMX tiles stays below it). */
const XSTATE_MAX = 16384;

const requestName = new Map<number, string>(Object.entries(PTRACE).map(([name, nr]) => [nr, name]));

function ptrace(request: number, pid: number, addr: number | bigint, data: number | bigint | Buffer): number {
  return syscall(
    NR.ptrace,
    'ptrace',
    () => [requestName.get(request) ?? String(request), String(pid)],
    request,
    pid,
    addr,
    data,
  );
}

export function ptraceSeize(pid: number, options: number): void {
  ptrace(PTRACE.SEIZE, pid, 0, options);
}

export function ptraceInterrupt(pid: number): void {
  ptrace(PTRACE.INTERRUPT, pid, 0, 0);
}

export function ptraceListen(pid: number): void {
  ptrace(PTRACE.LISTEN, pid, 0, 0);
}

/** Resume the thread, delivering `signal` (0 for none). */
export function ptraceCont(pid: number, signal = 0): void {
  faultPoint('resume');
  ptrace(PTRACE.CONT, pid, 0, signal);
}

/** Resume until the next syscall entry or exit. */
export function ptraceSyscall(pid: number, signal = 0): void {
  faultPoint('resume');
  ptrace(PTRACE.SYSCALL, pid, 0, signal);
}

export function ptraceDetach(pid: number, signal = 0): void {
  ptrace(PTRACE.DETACH, pid, 0, signal);
}

export function ptraceSetOptions(pid: number, options: number): void {
  ptrace(PTRACE.SETOPTIONS, pid, 0, options);
}

/** The message of the last ptrace event (a new child's PID, an exit status). */
export function ptraceGetEventMsg(pid: number): bigint {
  const out = Buffer.alloc(8);
  ptrace(PTRACE.GETEVENTMSG, pid, 0, out);
  return out.readBigUInt64LE(0);
}

/** The raw 128-byte siginfo_t of the signal that stopped the thread. */
export function ptraceGetSiginfo(pid: number): Buffer {
  const out = Buffer.alloc(128);
  ptrace(PTRACE.GETSIGINFO, pid, 0, out);
  return out;
}

/** Size of a siginfo_t. */
export const SIGINFO_SIZE = 128;
const PEEKSIGINFO_SHARED = 1;
const PEEK_BATCH = 32;

/**
 * The queued signals of a stopped thread, oldest first, each as its raw siginfo_t: those sent to
 * the thread, or (`shared`) those sent to its whole process. They stay queued.
 */
export function ptracePeekSiginfo(tid: number, shared: boolean): Buffer[] {
  const out: Buffer[] = [];
  const args = Buffer.alloc(16);
  const data = Buffer.alloc(PEEK_BATCH * SIGINFO_SIZE);
  for (;;) {
    args.writeBigUInt64LE(BigInt(out.length), 0);
    args.writeUInt32LE(shared ? PEEKSIGINFO_SHARED : 0, 8);
    args.writeInt32LE(PEEK_BATCH, 12);
    const n = ptrace(PTRACE.PEEKSIGINFO, tid, addressOf(args), data);
    for (let i = 0; i < n; i++)
      out.push(Buffer.from(data.subarray(i * SIGINFO_SIZE, (i + 1) * SIGINFO_SIZE)));
    if (n < PEEK_BATCH) return out;
  }
}

/**
 * The seccomp filters of thread `tid`, oldest first: each classic BPF program (its struct
 * sock_filter instructions) and the flags it was installed with (SECCOMP_FILTER_FLAG_LOG, ...).
 */
export function ptraceSeccompFilters(tid: number): { program: Buffer; flags: number }[] {
  const out: { program: Buffer; flags: number }[] = [];
  // Index 0 is the filter installed last; past the oldest the kernel answers ENOENT.
  for (let index = 0; ; index++) {
    let count: number;
    try {
      count = ptrace(PTRACE.SECCOMP_GET_FILTER, tid, index, 0);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return out.reverse();
      throw err;
    }
    const program = Buffer.alloc(count * 8);
    ptrace(PTRACE.SECCOMP_GET_FILTER, tid, index, program);
    const metadata = Buffer.alloc(16);
    metadata.writeBigUInt64LE(BigInt(index), 0);
    ptrace(PTRACE.SECCOMP_GET_METADATA, tid, 16, metadata);
    out.push({ program, flags: Number(metadata.readBigUInt64LE(8)) });
  }
}

/** Read a register set into a buffer; returns the bytes the kernel filled. */
function getRegset(pid: number, type: number, size: number): Buffer {
  const data = Buffer.alloc(size);
  const iov = Buffer.alloc(16);
  iov.writeBigUInt64LE(addressOf(data), 0);
  iov.writeBigUInt64LE(BigInt(size), 8);
  ptrace(PTRACE.GETREGSET, pid, type, iov);
  return data.subarray(0, Number(iov.readBigUInt64LE(8)));
}

function setRegset(pid: number, type: number, data: Buffer): void {
  const iov = Buffer.alloc(16);
  iov.writeBigUInt64LE(addressOf(data), 0);
  iov.writeBigUInt64LE(BigInt(data.length), 8);
  ptrace(PTRACE.SETREGSET, pid, type, iov);
}

export function ptraceGetRegs(pid: number): Regs {
  return decodeRegs(getRegset(pid, NT.PRSTATUS, USER_REGS_SIZE));
}

export function ptraceSetRegs(pid: number, regs: Regs): void {
  setRegset(pid, NT.PRSTATUS, encodeRegs(regs));
}

/** The thread's full xsave area (x87, SSE, AVX, AVX-512, ...), as large as this CPU makes it. */
export function ptraceGetXstate(pid: number): Buffer {
  return getRegset(pid, NT.X86_XSTATE, XSTATE_MAX);
}

export function ptraceSetXstate(pid: number, xstate: Buffer): void {
  setRegset(pid, NT.X86_XSTATE, xstate);
}

/** The blocked-signal mask as a 64-bit set (bit n-1 is signal n). */
export function ptraceGetSigmask(pid: number): bigint {
  const out = Buffer.alloc(8);
  ptrace(PTRACE.GETSIGMASK, pid, 8, out);
  return out.readBigUInt64LE(0);
}

export function ptraceSetSigmask(pid: number, mask: bigint): void {
  const buf = Buffer.alloc(8);
  buf.writeBigUInt64LE(mask, 0);
  ptrace(PTRACE.SETSIGMASK, pid, 8, buf);
}

/** A thread's rseq registration; `abiPointer` is 0 when it has none. */
export interface RseqConfiguration {
  abiPointer: bigint;
  abiSize: number;
  signature: number;
  flags: number;
}

/** PTRACE_SYSCALL_INFO_* in struct ptrace_syscall_info's first byte. */
const SYSCALL_INFO_OP = ['none', 'entry', 'exit', 'seccomp'] as const;

/** Which syscall stop the thread is in: 'entry', 'exit' (or 'seccomp'), or 'none'. */
export function ptraceSyscallStop(pid: number): (typeof SYSCALL_INFO_OP)[number] {
  const out = Buffer.alloc(88);
  ptrace(PTRACE.GET_SYSCALL_INFO, pid, out.length, out);
  return SYSCALL_INFO_OP[out.readUInt8(0)] ?? 'none';
}

export function ptraceGetRseqConfiguration(pid: number): RseqConfiguration {
  const out = Buffer.alloc(24);
  ptrace(PTRACE.GET_RSEQ_CONFIGURATION, pid, out.length, out);
  return {
    abiPointer: out.readBigUInt64LE(0),
    abiSize: out.readUInt32LE(8),
    signature: out.readUInt32LE(12),
    flags: out.readUInt32LE(16),
  };
}
