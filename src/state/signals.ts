// Signal dispositions: handler, flags, restorer and mask of every signal that is not at its default.
import { array, hex64, integer, object, type Infer } from '../image/schema.js';
import { NR } from '../sys/nr.js';
import { NSIG, SIG } from '../sys/signal.js';
import type { RemoteCall } from '../tracee/remote.js';
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

/**
 * Set every saved disposition, except SIGTRAP's: the batch executor's breakpoint would reset an
 * ignored SIGTRAP, so it is handed to the remote channel to set after its last batch.
 */
export function restoreSignals(ctx: RestoreContext, rec: SignalsRecord): void {
  const calls: RemoteCall[] = [];
  for (const a of rec) {
    if (a.signal === SIG.SIGTRAP) {
      ctx.remote.deferSigtrapAction(encodeSigaction(a));
      continue;
    }
    calls.push({
      name: `rt_sigaction(${a.signal})`,
      nr: NR.rt_sigaction,
      args: [a.signal, ctx.remote.put(encodeSigaction(a)), 0, SIGSET],
    });
  }
  ctx.remote.batch(calls);
}
