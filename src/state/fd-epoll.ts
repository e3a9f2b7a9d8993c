// epoll: the interest list, from fdinfo's `tfd:` records; made again with epoll_create1 and each
// watch added once every descriptor is at its number. A watch on a descriptor number closed since
// (epoll keeps it while its file lives on under another number) is added again through that other
// descriptor, duplicated to the old number for the while (kcmp KCMP_EPOLL_TFD finds it), what the
// number holds now moved aside meanwhile. One whose file is open nowhere else is refused.
import { FerryError } from '../errors.js';
import { array, hex64, integer, nullable, object, type Infer } from '../image/schema.js';
import { epollWatches } from '../sys/kcmp.js';
import { O } from '../sys/fcntl.js';
import { NR } from '../sys/nr.js';
import { unsupportedMessage } from './context.js';
import type { FdKind } from './fd-kind.js';

const EPOLL_CTL_ADD = 1;
/** struct epoll_event on x86_64: packed u32 events, u64 data. */
const EPOLL_EVENT = 12;
const TFD = /^(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)\s+pos:\s*\d+\s+ino:\s*([0-9a-f]+)/;

const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  watches: array(
    object({
      fd: integer(0, 1 << 20),
      events: integer(0, 2 ** 32 - 1),
      data: hex64,
      /** Of a watch whose number was closed since: a descriptor of the same file (none before version 8). */
      via: nullable(integer(0, 1 << 20)),
      /** When its number holds another file now: that descriptor's flags (it is moved aside for the while). */
      taken: nullable(integer(0, 2 ** 31 - 1)),
    }),
    { max: 1 << 20 },
  ),
});
type EpollRecord = Infer<typeof record>;

export const fdEpoll: FdKind<'epoll', EpollRecord> = {
  kind: 'epoll',
  record,
  matches: (info) => info.target === 'anon_inode:[eventpoll]',
  dump(ctx, info) {
    /** Watches met so far under each number (several files may have been watched under one). */
    const under = new Map<number, number>();
    const watches = info.fdinfo.records
      .filter((r) => r.key === 'tfd')
      .map((r) => {
        const m = TFD.exec(r.value);
        if (!m)
          throw new FerryError(
            'FERRY_PARSE',
            `/proc/${ctx.pid}/fdinfo/${info.fd}: unreadable "tfd: ${r.value}"`,
          );
        const fd = Number(m[1]);
        const watched = ctx.fds.get(fd);
        const ino = Number.parseInt(m[4]!, 16);
        const toff = under.get(fd) ?? 0;
        under.set(fd, toff + 1);
        const same = watched !== undefined && watched.stat.ino === ino;
        const via = same
          ? fd
          : [...ctx.fds.keys()].find((other) => epollWatches(ctx.pid, other, info.fd, fd, toff));
        if (via === undefined) {
          throw new FerryError(
            'FERRY_UNSUPPORTED_STATE',
            unsupportedMessage(
              ctx.pid,
              `epoll fd ${info.fd} watches fd ${fd}`,
              'whose file was closed since and is open under no other number, and cannot be watched again',
            ),
          );
        }
        return {
          fd,
          events: Number.parseInt(m[2]!, 16),
          data: BigInt(`0x${m[3]!}`),
          via: via === fd ? null : via,
          taken: !same && watched !== undefined ? watched.fdinfo.flags : null,
        };
      });
    return { fd: info.fd, flags: info.fdinfo.flags, watches };
  },
  restore(ctx, rec, fds) {
    fds.place(rec.fd, fds.create({ name: 'epoll_create1', nr: NR.epoll_create1, args: [0] }), rec.flags);
    for (const w of rec.watches) {
      const event = Buffer.alloc(EPOLL_EVENT);
      event.writeUInt32LE(w.events, 0);
      event.writeBigUInt64LE(w.data, 4);
      // The watch is added under its number through a duplicate of the same file there, what the
      // number holds now (if anything) moved aside for the while.
      const aside = w.taken === null ? undefined : fds.spare();
      if (aside !== undefined)
        fds.after({ name: `dup3(${w.fd}, ${aside})`, nr: NR.dup3, args: [w.fd, aside, 0] });
      if (w.via !== null) fds.after({ name: `dup3(${w.via}, ${w.fd})`, nr: NR.dup3, args: [w.via, w.fd, 0] });
      fds.after({
        name: `epoll_ctl(${rec.fd}, ADD, ${w.fd})`,
        nr: NR.epoll_ctl,
        args: [rec.fd, EPOLL_CTL_ADD, w.fd, ctx.remote.put(event)],
      });
      if (aside !== undefined) {
        const back = {
          name: `dup3(${aside}, ${w.fd})`,
          nr: NR.dup3,
          args: [aside, w.fd, w.taken! & O.CLOEXEC],
        };
        fds.after(back);
        fds.after({ name: `close(${aside})`, nr: NR.close, args: [aside] });
      } else if (w.via !== null) fds.after({ name: `close(${w.fd})`, nr: NR.close, args: [w.fd] });
    }
  },
};
