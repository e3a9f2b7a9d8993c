// Signal dispositions: handler, flags, restorer and mask of every signal that is not at its default.
// And signals queued but not delivered yet (blocked, or sent as the process was frozen), each with
// its siginfo, to the process or to one of its threads.
import { array, base64, hex64, integer, nullable, object, type Infer } from '../image/schema.js';
import { ptracePeekSiginfo, SIGINFO_SIZE } from '../sys/ptrace.js';
import { NR } from '../sys/nr.js';
import { NSIG, SIG } from '../sys/signal.js';
import type { DumpContext, RestoreContext } from './context.js';

export const sigactionRecord = object({
  signal: integer(1, NSIG),
  handler: hex64,
  flags: hex64,
  restorer: hex64,
  mask: hex64,
});

export const signalsRecord = array(sigactionRecord, { max: NSIG });
export type SignalsRecord = Infer<typeof signalsRecord>;

/** The kernel's struct sigaction on x86_64: handler, flags, restorer, 8-byte mask. */
const SIGACTION = 32;
const SIGSET = 8;

/** Signals whose disposition cannot be read or changed. */
const FIXED = new Set<number>([SIG.SIGKILL, SIG.SIGSTOP]);

export function dumpSignals(ctx: DumpContext): SignalsRecord {
  const signals = Array.from({ length: NSIG }, (_, i) => i + 1).filter((s) => !FIXED.has(s));
  const out = ctx.remote.alloc(signals.length * SIGACTION);
  ctx.remote.batch(
    signals.map((signal, i) => ({
      name: `rt_sigaction(${signal})`,
      nr: NR.rt_sigaction,
      args: [signal, 0, out + BigInt(i * SIGACTION), SIGSET],
    })),
  );
  const raw = ctx.remote.read(out, signals.length * SIGACTION);
  return signals
    .map((signal, i) => ({
      signal,
      handler: raw.readBigUInt64LE(i * SIGACTION),
      flags: raw.readBigUInt64LE(i * SIGACTION + 8),
      restorer: raw.readBigUInt64LE(i * SIGACTION + 16),
      mask: raw.readBigUInt64LE(i * SIGACTION + 24),
    }))
    .filter((a) => a.handler !== 0n || a.flags !== 0n || a.mask !== 0n);
}

export function encodeSigaction(a: Infer<typeof sigactionRecord>): Buffer {
  const buf = Buffer.alloc(SIGACTION);
  buf.writeBigUInt64LE(a.handler, 0);
  buf.writeBigUInt64LE(a.flags, 8);
  buf.writeBigUInt64LE(a.restorer, 16);
  buf.writeBigUInt64LE(a.mask, 24);
  return buf;
}

/** Set every saved disposition. */
export function restoreSignals(ctx: RestoreContext, rec: SignalsRecord): void {
  ctx.remote.batch(
    rec.map((a) => ({
      name: `rt_sigaction(${a.signal})`,
      nr: NR.rt_sigaction,
      args: [a.signal, ctx.remote.put(encodeSigaction(a)), 0, SIGSET],
    })),
  );
}

/** Real-time signals queue up to RLIMIT_SIGPENDING; ferry keeps as many as an image may. */
const MAX_PENDING = 1 << 16;

export const pendingRecord = array(
  object({
    /** The thread it was sent to, or null: sent to the process. */
    tid: nullable(integer(1, 2 ** 22)),
    siginfo: base64(SIGINFO_SIZE),
  }),
  { max: MAX_PENDING },
);
export type PendingRecord = Infer<typeof pendingRecord>;

/** Every queued signal of the frozen process: the process's own, then each thread's. */
export function dumpPending(ctx: DumpContext): PendingRecord {
  return [
    ...ptracePeekSiginfo(ctx.pid, true).map((siginfo) => ({ tid: null, siginfo })),
    ...ctx.tracee.tids.flatMap((tid) => ptracePeekSiginfo(tid, false).map((siginfo) => ({ tid, siginfo }))),
  ];
}

/**
 * Queue again, in their order, the saved signals of one thread: `thread` is its saved ID, `tid` its
 * new one, and `ctx.remote` runs inside it (the kernel lets only a thread itself queue a siginfo of
 * any kind to itself, and only the leader to its process). The leader also queues the process's.
 * They wait, as every signal does while ferry works in the process, until it runs with its mask.
 */
export function restorePending(ctx: RestoreContext, rec: PendingRecord, thread: number, tid: number): void {
  const leader = tid === ctx.pid;
  const mine = rec.filter((p) => p.tid === thread || (leader && p.tid === null));
  ctx.remote.withData(() =>
    ctx.remote.batch(
      mine.map(({ tid: to, siginfo }) => {
        const signal = siginfo.readInt32LE(0);
        const info = ctx.remote.put(siginfo);
        return to === null
          ? { name: `rt_sigqueueinfo(${signal})`, nr: NR.rt_sigqueueinfo, args: [ctx.pid, signal, info] }
          : {
              name: `rt_tgsigqueueinfo(${tid}, ${signal})`,
              nr: NR.rt_tgsigqueueinfo,
              args: [ctx.pid, tid, signal, info],
            };
      }),
    ),
  );
}

const SIG_IGN = 1n;
const SA_RESTART = 0x10000000n;

/**
 * For each thread (in `threads` order), the handled signal it takes first when it runs again, or
 * undefined: the lowest of the signals pending for it or for the process (a process-wide one goes
 * to the first thread that does not block it, as the kernel prefers the main thread) that it does
 * not block and that has a handler; with whether that handler asked for SA_RESTART.
 */
export function handledFirst(
  threads: readonly { tid: number; sigmask: bigint }[],
  pending: PendingRecord,
  signals: SignalsRecord,
): ({ signal: number; restart: boolean } | undefined)[] {
  const handlers = new Map(
    signals.filter((s) => s.handler > SIG_IGN).map((s) => [s.signal, (s.flags & SA_RESTART) !== 0n]),
  );
  const blocks = (mask: bigint, signal: number): boolean => (mask & (1n << BigInt(signal - 1))) !== 0n;
  const first: (number | undefined)[] = threads.map(() => undefined);
  const take = (i: number, signal: number): void => {
    const now = first[i];
    if (now === undefined || signal < now) first[i] = signal;
  };
  for (const p of pending) {
    const signal = p.siginfo.readInt32LE(0);
    if (!handlers.has(signal)) continue;
    const i =
      p.tid === null
        ? threads.findIndex((t) => !blocks(t.sigmask, signal))
        : threads.findIndex((t) => t.tid === p.tid && !blocks(t.sigmask, signal));
    if (i >= 0) take(i, signal);
  }
  return first.map((signal) =>
    signal === undefined ? undefined : { signal, restart: handlers.get(signal)! },
  );
}
