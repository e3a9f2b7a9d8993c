// One thread: registers, the full xsave area, signal mask, rseq registration, tid address, robust
// futex list, alternate signal stack, name, scheduling (policy, nice or priority, deadline, clamps),
// timer slack and parent-death signal.
import { PAGE_SIZE } from '../proc/pagemap.js';
import { mergeSpans, type Span } from '../vma/spans.js';
import { FerryError } from '../errors.js';
import {
  array,
  base64,
  boolean,
  hex64,
  integer,
  nullable,
  object,
  string,
  type Infer,
  type Schema,
} from '../image/schema.js';
import { readProcText } from '../proc/files.js';
import { CLONE_THREAD_FLAGS } from '../sys/clone.js';
import { errnoName, isErrno, SysError } from '../sys/errno.js';
import { NR } from '../sys/nr.js';
import { PR } from '../sys/prctl.js';
import {
  PTRACE_O,
  ptraceGetRseqConfiguration,
  ptraceGetXstate,
  ptraceSeccompFilters,
  ptraceSetOptions,
  ptraceSetSigmask,
  ptraceSetXstate,
} from '../sys/ptrace.js';
import { REG_NAMES, resumeRegs, type RegName } from '../sys/regs.js';
import { getRobustList } from '../sys/thread-state.js';
import { SCHED, SCHED_FLAG_UTIL_CLAMP, schedGetattr, schedSetattr } from '../sys/sched.js';
import { clone3In, type SamePid } from '../stub/restore-stub.js';
import type { RemoteCall, RemoteSyscalls } from '../tracee/remote.js';
import { credsRecord, dumpCreds, sameCreds, type CredsRecord } from './creds.js';
import { parseStatus } from '../proc/status.js';
import type { DumpContext, RestoreContext } from './context.js';

const regsRecord = object(
  Object.fromEntries(REG_NAMES.map((n) => [n, hex64])) as Record<RegName, Schema<bigint>>,
);

const schedRecord = object({
  policy: integer(0, 7),
  flags: hex64,
  nice: integer(-20, 19),
  priority: integer(0, 99),
  runtime: hex64,
  deadline: hex64,
  period: hex64,
  utilMin: integer(0, 1024),
  utilMax: integer(0, 1024),
});

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
  /** sched_getattr(); null in an image older than version 8. */
  sched: nullable(schedRecord),
  /** PR_GET_TIMERSLACK, nanoseconds; null in an image older than version 8. */
  timerSlack: nullable(hex64),
  /** PR_GET_PDEATHSIG: the signal the thread gets when its parent dies, or 0. */
  pdeathsig: integer(0, 64),
  /** Credentials of its own, or null: the process's (`creds` of the state). */
  creds: nullable(credsRecord),
  /** Its seccomp filters, oldest first (classic BPF), or null: none (none before version 8). */
  seccomp: nullable(
    array(object({ program: base64(4096 * 8), flags: integer(0, 2 ** 31 - 1) }), { max: 512 }),
  ),
  /** It runs in seccomp's strict mode (read, write, exit and sigreturn only). */
  seccompStrict: boolean,
});

export type ThreadRecord = Infer<typeof threadRecord>;

const SS_ONSTACK = 1;
const SS_DISABLE = 2;
const STACK_T = 24;

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

/**
 * Dump one thread; the calls that read the calling thread's state run in it. `creds`: the
 * process's (its leader's) credentials.
 */
export function dumpThread(ctx: DumpContext, tid: number, creds: CredsRecord): ThreadRecord {
  const remote = tid === ctx.remote.tid ? ctx.remote : ctx.remote.thread(tid);
  try {
    const tidAddress = remote.alloc(8);
    const stack = remote.alloc(STACK_T);
    const pdeathsig = remote.alloc(4);
    const [, , , timerSlack] = remote.batch([
      { name: 'prctl(PR_GET_TID_ADDRESS)', nr: NR.prctl, args: [PR.GET_TID_ADDRESS, tidAddress, 0, 0, 0] },
      { name: 'sigaltstack', nr: NR.sigaltstack, args: [0, stack] },
      { name: 'prctl(PR_GET_PDEATHSIG)', nr: NR.prctl, args: [PR.GET_PDEATHSIG, pdeathsig, 0, 0, 0] },
      { name: 'prctl(PR_GET_TIMERSLACK)', nr: NR.prctl, args: [PR.GET_TIMERSLACK, 0, 0, 0, 0] },
    ]);
    const ss = remote.read(stack, STACK_T);
    return {
      tid,
      name: readProcText(ctx.pid, `task/${tid}/comm`).replace(/\n$/, ''),
      regs: ctx.tracee.savedRegs(tid),
      xstate: ptraceGetXstate(tid),
      sigmask: remote.savedMask,
      tidAddress: remote.read(tidAddress, 8).readBigUInt64LE(0),
      robustList: getRobustList(tid),
      rseq: readRseq(ctx, tid),
      sigaltstack: { sp: ss.readBigUInt64LE(0), flags: ss.readUInt32LE(8), size: ss.readBigUInt64LE(16) },
      sched: schedGetattr(tid),
      timerSlack: timerSlack!,
      pdeathsig: remote.read(pdeathsig, 4).readInt32LE(0),
      creds: ownCreds(ctx, tid, remote, creds),
      ...threadSeccomp(ctx.pid, tid),
    };
  } finally {
    if (remote !== ctx.remote) remote.close();
  }
}

/** The thread's seccomp mode: its filters (read through ptrace), or strict, or neither. */
function threadSeccomp(pid: number, tid: number): Pick<ThreadRecord, 'seccomp' | 'seccompStrict'> {
  const mode = parseStatus(readProcText(pid, `task/${tid}/status`)).seccomp;
  return { seccomp: mode === 2 ? ptraceSeccompFilters(tid) : null, seccompStrict: mode === 1 };
}

/** The thread's credentials if they are not the process's `creds`, else null. */
function ownCreds(
  ctx: DumpContext,
  tid: number,
  remote: RemoteSyscalls,
  creds: CredsRecord,
): CredsRecord | null {
  if (tid === ctx.pid) return null;
  const own = dumpCreds(remote, parseStatus(readProcText(ctx.pid, `task/${tid}/status`)));
  return sameCreds(own, creds) ? null : own;
}

/**
 * Make the restored process's other threads from its first, each held by ferry before it runs.
 * They keep their thread IDs when the process kept its PID and the IDs are free; else they get new
 * ones, unless `samePid` is 'require'. Returns the new ID of each.
 */
export function cloneThreads(ctx: RestoreContext, recs: readonly ThreadRecord[], samePid: SamePid): number[] {
  if (recs.length === 0) return [];
  const remote = ctx.remote;
  ptraceSetOptions(ctx.pid, PTRACE_O.TRACESYSGOOD | PTRACE_O.TRACECLONE);
  const keepIds = samePid !== 'no' && ctx.pid === ctx.originalPid;
  return recs.map((rec) =>
    remote.withData(() => {
      let tid = keepIds ? clone3In(remote, CLONE_THREAD_FLAGS, 0, rec.tid) : undefined;
      if (tid === undefined || tid < 0n) {
        if (tid !== undefined && samePid === 'require') {
          throw new FerryError(
            'FERRY_PID_TAKEN',
            `cannot restore thread ${rec.tid} under its ID: clone3 set_tid gave ${errnoName(Number(-tid))}`,
          );
        }
        tid = clone3In(remote, CLONE_THREAD_FLAGS, 0);
        if (tid < 0n) throw new SysError(`clone3 of a thread in process ${ctx.pid}`, [], Number(-tid));
      }
      ctx.stub.adoptThread(Number(tid));
      return Number(tid);
    }),
  );
}

/**
 * Give the stub this thread's kernel-side state. Its parent-death signal is given only with
 * `pdeathsig` (a process whose parent is restored with it), and not to the thread-group leader,
 * whose signal is set last (restore.ts).
 */
export function restoreThread(ctx: RestoreContext, rec: ThreadRecord, pdeathsig: boolean): void {
  const remote = ctx.remote;
  const calls: RemoteCall[] = [
    { name: 'prctl(PR_SET_NAME)', nr: NR.prctl, args: [PR.SET_NAME, remote.putString(rec.name), 0, 0, 0] },
    { name: 'set_tid_address', nr: NR.set_tid_address, args: [rec.tidAddress] },
  ];
  if (rec.timerSlack !== null)
    calls.push({
      name: 'prctl(PR_SET_TIMERSLACK)',
      nr: NR.prctl,
      args: [PR.SET_TIMERSLACK, rec.timerSlack, 0, 0, 0],
    });
  if (pdeathsig && rec.pdeathsig !== 0 && rec.tid !== ctx.originalPid)
    calls.push({
      name: 'prctl(PR_SET_PDEATHSIG)',
      nr: NR.prctl,
      args: [PR.SET_PDEATHSIG, rec.pdeathsig, 0, 0, 0],
    });
  if (rec.robustList.head !== 0n) {
    calls.push({
      name: 'set_robust_list',
      nr: NR.set_robust_list,
      args: [rec.robustList.head, rec.robustList.len],
    });
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
 * The call that registers the thread's rseq area again, once its memory is in place: registering
 * has the kernel write the CPU number into the area as the thread next leaves the kernel.
 */
export function rseqCalls(rec: ThreadRecord): RemoteCall[] {
  if (!rec.rseq) return [];
  const { abi, size, signature } = rec.rseq;
  return [{ name: 'rseq', nr: NR.rseq, args: [abi, size, 0, signature] }];
}

/**
 * The pages of the process a restore writes into itself, sorted: each thread's tid word (corrected
 * under a new PID, finishThread()) and rseq area (the kernel writes the CPU number there when it is
 * registered). Memory that comes in as the process runs (post-copy) must have these in at once.
 */
export function pagesWrittenAtRestore(threads: readonly ThreadRecord[]): Span[] {
  const page = BigInt(PAGE_SIZE);
  const spans: Span[] = [];
  const add = (addr: bigint, len: number): void => {
    if (addr !== 0n)
      spans.push({ start: addr & ~(page - 1n), end: (addr + BigInt(len) + page - 1n) & ~(page - 1n) });
  };
  for (const t of threads) {
    add(t.tidAddress, 4);
    if (t.rseq) add(t.rseq.abi, t.rseq.size);
  }
  return mergeSpans(spans.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0)));
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
  restoreSched(ctx, rec, newTid);
  ctx.stub.replaceSavedRegs(newTid, resumeRegs(rec.regs));
}

/**
 * The thread's scheduling, set by ferry (root: any policy, any nice). What the kernel refuses (a
 * deadline it cannot admit) is said, and the thread keeps the stub's.
 */
function restoreSched(ctx: RestoreContext, rec: ThreadRecord, tid: number): void {
  if (!rec.sched) return;
  const now = schedGetattr(tid);
  const want = rec.sched;
  // A kernel without utilization clamping reports 0 and 0: nothing to give back then.
  const clamped = !(want.utilMin === 0 && (want.utilMax === 1024 || want.utilMax === 0));
  if (
    now.policy === want.policy &&
    now.flags === want.flags &&
    now.nice === want.nice &&
    now.priority === want.priority &&
    !clamped &&
    want.policy !== SCHED.DEADLINE
  )
    return;
  try {
    schedSetattr(tid, { ...want, flags: want.flags | (clamped ? SCHED_FLAG_UTIL_CLAMP : 0n) });
  } catch (err) {
    ctx.warn(
      `thread ${rec.tid} keeps scheduling policy ${now.policy} and nice ${now.nice}: setting policy ${want.policy}, nice ${want.nice}, priority ${want.priority} failed (${err instanceof Error ? err.message : String(err)})`,
    );
  }
}
