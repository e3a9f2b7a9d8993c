// The rt_sigframe a thread returns through if ferry goes away while the thread runs ferry's code:
// `rt_sigreturn` on it gives the thread back, in one system call and without ferry, the registers
// it is to resume with, its own signal mask and its FPU/vector state (x86_64 layout, as the kernel
// reads it in arch/x86/kernel/signal_64.c).
import { resumeRegs, type Regs } from '../sys/regs.js';

/** Offsets in the frame: pretcode, then struct ucontext, then siginfo; the xsave area at 448. */
const UC_FLAGS = 8;
const UC_STACK_FLAGS = 32;
const SIGCONTEXT = 48;
const SIGCONTEXT_SEGMENTS = SIGCONTEXT + 18 * 8;
const SIGCONTEXT_FPSTATE = SIGCONTEXT + 23 * 8;
const UC_SIGMASK = SIGCONTEXT + 256;
const FPSTATE = 448;

/** The frame's start must be 64-byte aligned, as XRSTOR needs the xsave area to be. */
export const SIGFRAME_ALIGN = 64;

/** uc_flags: the frame holds an xsave area, and SS as saved. */
const UC_FP_XSTATE = 1n;
const UC_SIGCONTEXT_SS = 2n;
const UC_STRICT_RESTORE_SS = 4n;

/** An invalid ss_flags: rt_sigreturn then leaves the thread's alternate signal stack as it is. */
const KEEP_ALTSTACK = 0xffffffff;

/** struct _fpx_sw_bytes in the xsave area's software-reserved bytes, and the word after the area. */
const SW_BYTES = 464;
const XCR0 = 464;
const XSTATE_BV = 512;
const FP_XSTATE_MAGIC1 = 0x46505853;
const FP_XSTATE_MAGIC2 = 0x46505845;

/**
 * AMX tile data: the one component the kernel leaves out of a task's signal frames until the task
 * asks for it (arch_prctl ARCH_REQ_XCOMP_PERM). A frame claiming more than the task's size is read
 * as FP/SSE only, which would lose the AVX registers.
 */
const XFEATURE_XTILEDATA = 18n;
const XTILEDATA_SIZE = 8192;

/** The sigcontext's general registers, in its order. */
const SIGCONTEXT_REGS = [
  'r8',
  'r9',
  'r10',
  'r11',
  'r12',
  'r13',
  'r14',
  'r15',
  'rdi',
  'rsi',
  'rbp',
  'rbx',
  'rdx',
  'rax',
  'rcx',
  'rsp',
  'rip',
  'eflags',
] as const;

/**
 * The part of a thread's xsave area (standard format, as PTRACE_GETREGSET NT_X86_XSTATE gives it)
 * a signal frame carries, and the features it restores: all of it, but for AMX tile data the
 * thread does not use when that is the last component.
 */
function frameXstate(xstate: Buffer): { bytes: Buffer; features: bigint } {
  const xcr0 = xstate.readBigUInt64LE(XCR0);
  const inUse = xstate.readBigUInt64LE(XSTATE_BV);
  const tile = 1n << XFEATURE_XTILEDATA;
  if (!(inUse & tile) && xcr0 >> XFEATURE_XTILEDATA === 1n && xstate.length > XTILEDATA_SIZE + 576)
    return { bytes: xstate.subarray(0, xstate.length - XTILEDATA_SIZE), features: xcr0 & ~tile };
  return { bytes: xstate, features: xcr0 };
}

/** Bytes of the frame for this xsave area. */
export function sigframeSize(xstate: Buffer): number {
  return FPSTATE + frameXstate(xstate).bytes.length + 4;
}

export interface Sigframe {
  bytes: Buffer;
  /** Where rsp must point when `rt_sigreturn` runs: the frame's address + 8. */
  rsp: bigint;
}

/**
 * The frame at `at` (64-byte aligned) that resumes a thread stopped with `regs` as the kernel would
 * have resumed it, with signal mask `sigmask` and xsave area `xstate`.
 */
export function encodeSigframe(at: bigint, regs: Regs, sigmask: bigint, xstate: Buffer): Sigframe {
  if (at % BigInt(SIGFRAME_ALIGN) !== 0n) throw new RangeError('a signal frame must be 64-byte aligned');
  const resume = resumeRegs(regs);
  const { bytes: xsave, features } = frameXstate(xstate);
  const frame = Buffer.alloc(FPSTATE + xsave.length + 4);
  frame.writeBigUInt64LE(UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS, UC_FLAGS);
  frame.writeUInt32LE(KEEP_ALTSTACK, UC_STACK_FLAGS);
  SIGCONTEXT_REGS.forEach((name, i) => frame.writeBigUInt64LE(resume[name], SIGCONTEXT + i * 8));
  frame.writeUInt16LE(Number(resume.cs), SIGCONTEXT_SEGMENTS);
  frame.writeUInt16LE(Number(resume.ss), SIGCONTEXT_SEGMENTS + 6);
  frame.writeBigUInt64LE(at + BigInt(FPSTATE), SIGCONTEXT_FPSTATE);
  frame.writeBigUInt64LE(sigmask, UC_SIGMASK);
  xsave.copy(frame, FPSTATE);
  const sw = FPSTATE + SW_BYTES;
  frame.writeUInt32LE(FP_XSTATE_MAGIC1, sw);
  frame.writeUInt32LE(xsave.length + 4, sw + 4);
  frame.writeBigUInt64LE(features, sw + 8);
  frame.writeUInt32LE(xsave.length, sw + 16);
  frame.fill(0, sw + 20, sw + 48);
  frame.writeUInt32LE(FP_XSTATE_MAGIC2, FPSTATE + xsave.length);
  return { bytes: frame, rsp: at + 8n };
}
