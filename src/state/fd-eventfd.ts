// eventfd: its counter and semaphore mode, from fdinfo; made again with eventfd2 and the counter
// written back.
import { boolean, hex64, integer, object, type Infer } from '../image/schema.js';
import { O } from '../sys/fcntl.js';
import { NR } from '../sys/nr.js';
import type { FdKind } from './fd-kind.js';

const EFD_SEMAPHORE = 1;

const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  count: hex64,
  semaphore: boolean,
});
type EventfdRecord = Infer<typeof record>;

export const fdEventfd: FdKind<'eventfd', EventfdRecord> = {
  kind: 'eventfd',
  record,
  matches: (info) => info.target === 'anon_inode:[eventfd]',
  dump: (_ctx, info) => ({
    fd: info.fd,
    flags: info.fdinfo.flags,
    count: BigInt(`0x${(info.fdinfo.fields['eventfd-count'] ?? '0').trim()}`),
    semaphore: info.fdinfo.fields['eventfd-semaphore'] === '1',
  }),
  restore(ctx, rec, fds) {
    const flags = (rec.semaphore ? EFD_SEMAPHORE : 0) | (rec.flags & O.NONBLOCK);
    const made = fds.create({ name: 'eventfd2', nr: NR.eventfd2, args: [0, flags] });
    if (rec.count > 0n) {
      const count = Buffer.alloc(8);
      count.writeBigUInt64LE(rec.count);
      fds.call({ name: 'write(eventfd)', nr: NR.write, args: [made, ctx.remote.put(count), 8] });
    }
    fds.place(rec.fd, made, rec.flags);
  },
};
