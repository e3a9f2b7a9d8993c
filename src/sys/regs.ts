// x86_64 `struct user_regs_struct` (NT_PRSTATUS): the general registers of one thread.
import { NR } from './nr.js';

/** Register names in the kernel's layout order; each is a 64-bit slot. */
export const REG_NAMES = [
  'r15',
  'r14',
  'r13',
  'r12',
  'rbp',
  'rbx',
  'r11',
  'r10',
  'r9',
  'r8',
  'rax',
  'rcx',
  'rdx',
  'rsi',
  'rdi',
  'orig_rax',
  'rip',
  'cs',
  'eflags',
  'rsp',
  'ss',
  'fs_base',
  'gs_base',
  'ds',
  'es',
  'fs',
  'gs',
] as const;

export type RegName = (typeof REG_NAMES)[number];

/** General registers, each as an unsigned 64-bit value. */
export type Regs = Record<RegName, bigint>;

/** orig_rax of a thread not in a syscall: the kernel restarts nothing on its way out. */
export const NO_RESTART = (1n << 64n) - 1n;

/** Size of user_regs_struct in bytes. */
export const USER_REGS_SIZE = REG_NAMES.length * 8;

export function decodeRegs(buf: Buffer): Regs {
  const regs = {} as Regs;
  REG_NAMES.forEach((name, i) => {
    regs[name] = buf.readBigUInt64LE(i * 8);
  });
  return regs;
}

export function encodeRegs(regs: Regs): Buffer {
  const buf = Buffer.alloc(USER_REGS_SIZE);
  REG_NAMES.forEach((name, i) => {
    buf.writeBigUInt64LE(BigInt.asUintN(64, regs[name]), i * 8);
  });
  return buf;
}

/** A register value read as a signed 64-bit integer (syscall results, orig_rax). */
export function signed(value: bigint): bigint {
  return BigInt.asIntN(64, value);
}

const ERESTARTSYS = -512n;
const ERESTARTNOINTR = -513n;
const ERESTARTNOHAND = -514n;
const ERESTART_RESTARTBLOCK = -516n;
const EINTR = -4n;

/**
 * Registers to resume with, as the kernel would have set them on the thread's way out: one stopped
 * in an interrupted syscall re-executes it (rip back over the 2-byte `syscall`). One interrupted
 * with -ERESTART_RESTARTBLOCK (a relative sleep or timed wait) would have gone on with the time left
 * through restart_syscall, which neither a restored process (the time stayed in the old kernel task)
 * nor one resumed through rt_sigreturn (which resets it) has: it runs again whole, from its own
 * arguments (syscalls keep them in their registers), and may wait longer than it asked, as a sleep
 * may. restart_syscall itself has no arguments left to run again from and sees -EINTR.
 */
export function resumeRegs(regs: Regs): Regs {
  const out = { ...regs, orig_rax: NO_RESTART };
  if (signed(regs.orig_rax) < 0n) return out;
  const ret = signed(regs.rax);
  const again = { ...out, rax: regs.orig_rax, rip: regs.rip - 2n };
  if (ret === ERESTARTSYS || ret === ERESTARTNOINTR || ret === ERESTARTNOHAND) return again;
  if (ret !== ERESTART_RESTARTBLOCK) return out;
  return regs.orig_rax === BigInt(NR.restart_syscall) ? { ...out, rax: BigInt.asUintN(64, EINTR) } : again;
}

/**
 * Registers for a thread stopped in an interrupted syscall that takes a handled signal as soon as it
 * runs again: the call fails with EINTR, as the kernel would have made it (the handler runs first),
 * unless it is one that restarts regardless (ERESTARTNOINTR) or the handler asked for SA_RESTART
 * (ERESTARTSYS). Restarted, a call such as pause() would sleep through the signal that woke it.
 */
export function interruptedRegs(regs: Regs, saRestart: boolean): Regs {
  if (signed(regs.orig_rax) < 0n) return regs;
  const ret = signed(regs.rax);
  const eintr =
    ret === ERESTARTNOHAND || ret === ERESTART_RESTARTBLOCK || (ret === ERESTARTSYS && !saRestart);
  return eintr ? { ...regs, rax: BigInt.asUintN(64, EINTR) } : regs;
}
