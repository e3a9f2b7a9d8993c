// Timers a process set: its interval timers (setitimer: real, virtual, profiling) and its POSIX
// timers (timer_create), each with the time left and its period, read from inside the process.
// Restore arms them again relative to now; a POSIX timer gets its old ID back (the kernel's
// PR_TIMER_CREATE_RESTORE_IDS), its clock, signal, value and whom it signals.
import { FerryError } from '../errors.js';
import { array, hex64, integer, nullable, object, oneOf, type Infer } from '../image/schema.js';
import { readProcText } from '../proc/files.js';
import { parseTimers } from '../proc/timers.js';
import { NR } from '../sys/nr.js';
import type { RemoteCall } from '../tracee/remote.js';
import type { DumpContext, RestoreContext } from './context.js';

const ITIMERS = 3;
const ITIMERVAL = 32;
const ITIMERSPEC = 32;
const SIGEVENT = 64;
const SIGEV = { signal: 0, none: 1, thread: 2 } as const;
const SIGEV_THREAD_ID = 4;
const PR_TIMER_CREATE_RESTORE_IDS = 77;
const NS = 1_000_000_000n;

const itimerRecord = object({
  /** ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF */
  which: integer(0, ITIMERS - 1),
  /** Microseconds left and the period. */
  value: hex64,
  interval: hex64,
});

const posixTimerRecord = object({
  id: integer(0, 2 ** 31 - 1),
  clock: integer(-(2 ** 31), 2 ** 31 - 1),
  notify: oneOf(['signal', 'none', 'thread'] as const),
  /** The thread it signals, by its saved ID, or null: the process. */
  tid: nullable(integer(1, 2 ** 22)),
  signal: integer(0, 64),
  value: hex64,
  /** Nanoseconds left and the period. */
  remaining: hex64,
  interval: hex64,
});

export const timersRecord = object({
  itimers: array(itimerRecord, { max: ITIMERS }),
  posix: array(posixTimerRecord, { max: 1 << 16 }),
});
export type TimersRecord = Infer<typeof timersRecord>;
type PosixTimerRecord = Infer<typeof posixTimerRecord>;

const timeval = (buf: Buffer, at: number): bigint =>
  buf.readBigInt64LE(at) * 1_000_000n + buf.readBigInt64LE(at + 8);
const timespec = (buf: Buffer, at: number): bigint =>
  buf.readBigInt64LE(at) * NS + buf.readBigInt64LE(at + 8);

function writeTimespec(buf: Buffer, at: number, ns: bigint): void {
  buf.writeBigInt64LE(ns / NS, at);
  buf.writeBigInt64LE(ns % NS, at + 8);
}

function readItimers(ctx: DumpContext): Infer<typeof itimerRecord>[] {
  const out = ctx.remote.alloc(ITIMERS * ITIMERVAL);
  ctx.remote.batch(
    Array.from({ length: ITIMERS }, (_, which) => ({
      name: `getitimer(${which})`,
      nr: NR.getitimer,
      args: [which, out + BigInt(which * ITIMERVAL)],
    })),
  );
  const raw = ctx.remote.read(out, ITIMERS * ITIMERVAL);
  return Array.from({ length: ITIMERS }, (_, which) => ({
    which,
    interval: timeval(raw, which * ITIMERVAL),
    value: timeval(raw, which * ITIMERVAL + 16),
  })).filter((t) => t.value !== 0n || t.interval !== 0n);
}

export function dumpTimers(ctx: DumpContext): TimersRecord {
  const found = parseTimers(readProcText(ctx.pid, 'timers'), `/proc/${ctx.pid}/timers`);
  const out = ctx.remote.alloc(Math.max(1, found.length) * ITIMERSPEC);
  ctx.remote.batch(
    found.map((t, i) => ({
      name: `timer_gettime(${t.id})`,
      nr: NR.timer_gettime,
      args: [t.id, out + BigInt(i * ITIMERSPEC)],
    })),
  );
  const raw = ctx.remote.read(out, found.length * ITIMERSPEC);
  return {
    itimers: readItimers(ctx),
    posix: found.map((t, i) => ({
      ...t,
      interval: timespec(raw, i * ITIMERSPEC),
      remaining: timespec(raw, i * ITIMERSPEC + 16),
    })),
  };
}

function sigevent(t: PosixTimerRecord, tid: number | undefined): Buffer {
  const ev = Buffer.alloc(SIGEVENT);
  ev.writeBigUInt64LE(t.value, 0);
  ev.writeInt32LE(t.signal, 8);
  ev.writeInt32LE(SIGEV[t.notify] | (tid === undefined ? 0 : SIGEV_THREAD_ID), 12);
  if (tid !== undefined) ev.writeInt32LE(tid, 16);
  return ev;
}

/**
 * Arm the saved timers again, inside the process (after its threads exist: `tids` maps each saved
 * thread ID to its new one). A periodic timer that showed no time left (expired, its signal still
 * pending: the kernel re-arms it when the signal is taken) next expires one period from now.
 */
export function restoreTimers(
  ctx: RestoreContext,
  rec: TimersRecord,
  tids: ReadonlyMap<number, number>,
): void {
  const remote = ctx.remote;
  remote.withData(() => {
    const calls: RemoteCall[] = rec.itimers.map((t) => {
      const val = Buffer.alloc(ITIMERVAL);
      const value = t.value === 0n ? t.interval : t.value;
      val.writeBigInt64LE(t.interval / 1_000_000n, 0);
      val.writeBigInt64LE(t.interval % 1_000_000n, 8);
      val.writeBigInt64LE(value / 1_000_000n, 16);
      val.writeBigInt64LE(value % 1_000_000n, 24);
      return { name: `setitimer(${t.which})`, nr: NR.setitimer, args: [t.which, remote.put(val), 0] };
    });
    if (rec.posix.length > 0) {
      calls.push({
        name: 'prctl(PR_TIMER_CREATE_RESTORE_IDS, ON)',
        nr: NR.prctl,
        args: [PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0],
      });
    }
    for (const t of rec.posix) {
      const tid = t.tid === null ? undefined : tids.get(t.tid);
      if (t.tid !== null && tid === undefined)
        throw new FerryError(
          'FERRY_IMAGE_CORRUPT',
          `POSIX timer ${t.id} signals thread ${t.tid}, which the image lacks`,
        );
      const id = Buffer.alloc(4);
      id.writeInt32LE(t.id);
      calls.push({
        name: `timer_create(${t.id})`,
        nr: NR.timer_create,
        args: [t.clock, remote.put(sigevent(t, tid)), remote.put(id)],
      });
      const spec = Buffer.alloc(ITIMERSPEC);
      const remaining = t.remaining === 0n ? t.interval : t.remaining;
      writeTimespec(spec, 0, t.interval);
      writeTimespec(spec, 16, remaining);
      if (remaining !== 0n)
        calls.push({
          name: `timer_settime(${t.id})`,
          nr: NR.timer_settime,
          args: [t.id, 0, remote.put(spec), 0],
        });
    }
    if (rec.posix.length > 0) {
      calls.push({
        name: 'prctl(PR_TIMER_CREATE_RESTORE_IDS, OFF)',
        nr: NR.prctl,
        args: [PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0],
      });
    }
    remote.batch(calls);
  });
}
