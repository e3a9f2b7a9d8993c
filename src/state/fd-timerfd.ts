// timerfd: its clock, its timer (time left and period) and the expirations not yet read, from
// fdinfo; made again with timerfd_create, armed with timerfd_settime (relative to now), and given
// back its count of expirations with TFD_IOC_SET_TICKS.
import { hex64, integer, object, type Infer } from '../image/schema.js';
import { parseError } from '../proc/parse-error.js';
import { O } from '../sys/fcntl.js';
import { NR } from '../sys/nr.js';
import type { FdKind } from './fd-kind.js';

/** _IOW('T', 0, __u64) */
const TFD_IOC_SET_TICKS = 0x40085400;
const ITIMERSPEC = 32;
const NS = 1_000_000_000n;

const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  clock: integer(0, 15),
  ticks: hex64,
  /** Nanoseconds until it expires (0: disarmed, or expired and not read since), and its period. */
  value: hex64,
  interval: hex64,
});
type TimerfdRecord = Infer<typeof record>;

/** `(seconds, nanoseconds)` as fdinfo prints a timespec: nanoseconds. */
function timespec(text: string | undefined, source: string): bigint {
  const m = /^\((\d+), (\d+)\)$/.exec(text ?? '');
  if (!m) throw parseError(source, 0, '"(seconds, nanoseconds)"', text ?? '');
  return BigInt(m[1]!) * NS + BigInt(m[2]!);
}

export const fdTimerfd: FdKind<'timerfd', TimerfdRecord> = {
  kind: 'timerfd',
  record,
  matches: (info) => info.target === 'anon_inode:[timerfd]',
  dump(ctx, info) {
    const f = info.fdinfo.fields;
    const source = `/proc/${ctx.pid}/fdinfo/${info.fd}`;
    return {
      fd: info.fd,
      flags: info.fdinfo.flags,
      clock: Number(f.clockid ?? 0),
      ticks: BigInt(f.ticks ?? '0'),
      value: timespec(f.it_value, source),
      interval: timespec(f.it_interval, source),
    };
  },
  restore(ctx, rec, fds) {
    const remote = ctx.remote;
    const made = fds.create({
      name: 'timerfd_create',
      nr: NR.timerfd_create,
      args: [rec.clock, rec.flags & O.NONBLOCK],
    });
    // A periodic timer that expired and was not read since shows no time left: its next expiry
    // is taken as one period away.
    const value = rec.value === 0n && rec.ticks > 0n ? rec.interval : rec.value;
    if (value > 0n) {
      const spec = Buffer.alloc(ITIMERSPEC);
      spec.writeBigInt64LE(rec.interval / NS, 0);
      spec.writeBigInt64LE(rec.interval % NS, 8);
      spec.writeBigInt64LE(value / NS, 16);
      spec.writeBigInt64LE(value % NS, 24);
      fds.call({ name: 'timerfd_settime', nr: NR.timerfd_settime, args: [made, 0, remote.put(spec), 0] });
    }
    if (rec.ticks > 0n) {
      const ticks = Buffer.alloc(8);
      ticks.writeBigUInt64LE(rec.ticks);
      fds.call({
        name: 'ioctl(TFD_IOC_SET_TICKS)',
        nr: NR.ioctl,
        args: [made, TFD_IOC_SET_TICKS, remote.put(ticks)],
      });
    }
    fds.place(rec.fd, made, rec.flags);
  },
};
