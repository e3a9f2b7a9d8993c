// signalfd: the signals it takes, from fdinfo; made again with signalfd4.
import { hex64, integer, object, type Infer } from '../image/schema.js';
import { O } from '../sys/fcntl.js';
import { NR } from '../sys/nr.js';
import type { FdKind } from './fd-kind.js';

const SIGSET = 8;

const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  mask: hex64,
});
type SignalfdRecord = Infer<typeof record>;

export const fdSignalfd: FdKind<'signalfd', SignalfdRecord> = {
  kind: 'signalfd',
  record,
  matches: (info) => info.target === 'anon_inode:[signalfd]',
  dump: (_ctx, info) => ({
    fd: info.fd,
    flags: info.fdinfo.flags,
    mask: BigInt(`0x${(info.fdinfo.fields.sigmask ?? '0').trim()}`),
  }),
  restore(ctx, rec, fds) {
    const mask = Buffer.alloc(SIGSET);
    mask.writeBigUInt64LE(rec.mask);
    const made = fds.create({
      name: 'signalfd4',
      nr: NR.signalfd4,
      args: [-1, ctx.remote.put(mask), SIGSET, rec.flags & O.NONBLOCK],
    });
    fds.place(rec.fd, made, rec.flags);
  },
};
