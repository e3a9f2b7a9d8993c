// One thread: registers, the full xsave area, signal mask, rseq registration, tid address, robust
// futex list, alternate signal stack and name.
import { FerryError } from '../errors.js';
import {
  base64,
  hex64,
  integer,
  nullable,
  object,
  string,
  type Infer,
  type Schema,
} from '../image/schema.js';
import { readProcText } from '../proc/files.js';
import { isErrno } from '../sys/errno.js';
import { NR } from '../sys/nr.js';
import { PR } from '../sys/prctl.js';
import {
  ptraceGetRseqConfiguration,
  ptraceGetSigmask,
  ptraceGetXstate,
  ptraceSetSigmask,
  ptraceSetXstate,
} from '../sys/ptrace.js';
import { REG_NAMES, signed, type RegName, type Regs } from '../sys/regs.js';
import { getRobustList } from '../sys/thread-state.js';
import type { RemoteCall } from '../tracee/remote.js';
import type { DumpContext, RestoreContext } from './context.js';

const regsRecord = object(
  Object.fromEntries(REG_NAMES.map((n) => [n, hex64])) as Record<RegName, Schema<bigint>>,
);

export const threadRecord = object({
  tid: integer(1, 2 ** 22),
  name: string({ max: 16 }),
  regs: regsRecord,
  xstate: base64(16384),
  sigmask: hex64,
  tidAddress: hex64,
  robustList: object({ head: hex64, len: integer(0, 1 << 16) }),
  rseq: nullable(object({ abi: hex64, size: integer(0, 1 << 16), signature: integer(0, 2 ** 32 - 1) })),
  sigaltstack: object({ sp: hex64, flags: integer(0, 2 ** 32 - 1), size: hex64 }),
});

export type ThreadRecord = Infer<typeof threadRecord>;

const SS_ONSTACK = 1;
const SS_DISABLE = 2;
const STACK_T = 24;
const NO_RESTART = (1n << 64n) - 1n;
const ERESTARTSYS = -512n;
const ERESTARTNOINTR = -513n;
const ERESTARTNOHAND = -514n;
const ERESTART_RESTARTBLOCK = -516n;
const EINTR = -4n;

/** Offsets of the XSAVE header in the standard-format area, and of XCR0 in its software-reserved
 * bytes, where ptrace reports it (USER_XSTATE_XCR0_WORD). */
export const XSTATE_BV_OFFSET = 512;
const SW_XCR0_OFFSET = 464;

/** The xfeature mask (XCR0) of the CPU, as ptrace reports it in an xsave area. */
export function xsaveFeatures(xstate: Buffer): bigint {
  return xstate.length >= 512 ? xstate.readBigUInt64LE(SW_XCR0_OFFSET) : 0n;
}

/** Components an xsave area actually holds (XSTATE_BV). */
export function xstateInUse(xstate: Buffer): bigint {
  return xstate.length >= XSTATE_BV_OFFSET + 8 ? xstate.readBigUInt64LE(XSTATE_BV_OFFSET) : 0n;
}

function readRseq(ctx: DumpContext, tid: number): ThreadRecord['rseq'] {
  try {
    const rseq = ptraceGetRseqConfiguration(tid);
    return rseq.abiPointer === 0n
      ? null
      : { abi: rseq.abiPointer, size: rseq.abiSize, signature: rseq.signature };
  } catch (err) {
    if (!isErrno(err, 'EIO', 'EINVAL')) throw err;
    ctx.warn(`this kernel cannot report rseq registrations: thread ${tid} will restore without one`);
    return null;
  }
}

/** Dump the thread `remote` runs in (issue 4 brings the others). */
export function dumpThread(ctx: DumpContext, tid: number): ThreadRecord {
  const remote = ctx.remote;
  const tidAddress = remote.alloc(8);
  const stack = remote.alloc(STACK_T);
  remote.batch([
    { name: 'prctl(PR_GET_TID_ADDRESS)', nr: NR.prctl, args: [PR.GET_TID_ADDRESS, tidAddress, 0, 0, 0] },
    { name: 'sigaltstack', nr: NR.sigaltstack, args: [0, stack] },
  ]);
  const ss = remote.read(stack, STACK_T);
  const regs = ctx.tracee.savedRegs(tid);
  return {
    tid,
    name: readProcText(ctx.pid, `task/${tid}/comm`).replace(/\n$/, ''),
    regs,
    xstate: ptraceGetXstate(tid),
    sigmask: tid === remote.tid ? remote.savedMask : ptraceGetSigmask(tid),
    tidAddress: remote.read(tidAddress, 8).readBigUInt64LE(0),
    robustList: getRobustList(tid),
    rseq: readRseq(ctx, tid),
    sigaltstack: { sp: ss.readBigUInt64LE(0), flags: ss.readUInt32LE(8), size: ss.readBigUInt64LE(16) },
  };
}

/** Give the stub this thread's kernel-side state. */
export function restoreThread(ctx: RestoreContext, rec: ThreadRecord): void {
  const remote = ctx.remote;
  const calls: RemoteCall[] = [
    { name: 'prctl(PR_SET_NAME)', nr: NR.prctl, args: [PR.SET_NAME, remote.putString(rec.name), 0, 0, 0] },
    { name: 'set_tid_address', nr: NR.set_tid_address, args: [rec.tidAddress] },
  ];
  if (rec.robustList.head !== 0n) {
    calls.push({
      name: 'set_robust_list',
      nr: NR.set_robust_list,
      args: [rec.robustList.head, rec.robustList.len],
    });
  }
  if (rec.rseq) {
    calls.push({ name: 'rseq', nr: NR.rseq, args: [rec.rseq.abi, rec.rseq.size, 0, rec.rseq.signature] });
  }
  if (!(rec.sigaltstack.flags & SS_DISABLE)) {
    const ss = Buffer.alloc(STACK_T);
    ss.writeBigUInt64LE(rec.sigaltstack.sp, 0);
    ss.writeUInt32LE(rec.sigaltstack.flags & ~SS_ONSTACK, 8);
    ss.writeBigUInt64LE(rec.sigaltstack.size, 16);
    calls.push({ name: 'sigaltstack', nr: NR.sigaltstack, args: [remote.put(ss), 0] });
  }
  remote.batch(calls);
}

/**
 * Registers to resume with. A thread stopped in an interrupted syscall re-executes it (rip back over
 * the 2-byte `syscall`), as the kernel would have on the way out; one interrupted with
 * -ERESTART_RESTARTBLOCK cannot be (its restart block stayed in the old kernel task) and sees
 * -EINTR instead.
 */
export function resumeRegs(regs: Regs): Regs {
  const out = { ...regs, orig_rax: NO_RESTART };
  if (signed(regs.orig_rax) < 0n) return out;
  const ret = signed(regs.rax);
  if (ret === ERESTARTSYS || ret === ERESTARTNOINTR || ret === ERESTARTNOHAND) {
    return { ...out, rax: regs.orig_rax, rip: regs.rip - 2n };
  }
  if (ret === ERESTART_RESTARTBLOCK) return { ...out, rax: BigInt.asUintN(64, EINTR) };
  return out;
}

/**
 * Last step for a thread: registers, xsave area and mask. Under a new PID, glibc's copy of the tid
 * (the word at the tid address, its struct pthread) is corrected.
 */
export function finishThread(ctx: RestoreContext, rec: ThreadRecord, newTid: number): void {
  if (newTid !== rec.tid && rec.tidAddress !== 0n) {
    const word = ctx.remote.read(rec.tidAddress, 4);
    if (word.readInt32LE(0) === rec.tid) {
      word.writeInt32LE(newTid);
      ctx.remote.write(rec.tidAddress, word);
    }
  }
  try {
    ptraceSetXstate(newTid, rec.xstate);
  } catch (err) {
    throw new FerryError(
      'FERRY_IMAGE_INCOMPATIBLE',
      `this CPU refused the saved FPU/vector state of thread ${rec.tid}`,
      {
        cause: err,
      },
    );
  }
  ptraceSetSigmask(newTid, rec.sigmask);
  ctx.stub.replaceSavedRegs(newTid, resumeRegs(rec.regs));
}
