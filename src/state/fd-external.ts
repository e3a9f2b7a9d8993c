// Descriptors on something outside the dump: a pipe that a process outside it holds too (a logger
// reading the job's output, the shell that started it), or a Unix socket whose peer such a process
// holds (journald's end of a service's stdout). Nothing here could make them again, so the dump
// records what each was (its key as /proc shows it: `pipe:[123]`, `socket:[456]`), and who outside
// held it, and warns; the restore is handed a replacement by its caller (`--inherit-fd fd[N]:KEY`,
// a descriptor of its own) and refuses, naming each, without one. A migration refuses them.
import { integer, object, string } from '../image/schema.js';
import type { FdKind } from './fd-kind.js';

const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  /** What the descriptor was: `pipe:[ino]` or `socket:[ino]`. */
  key: string({ max: 64 }),
  /** Who outside the dump held it (or its peer): "logger (process 55)". */
  holder: string({ max: 256 }),
});

/** The key under which ferry holds the caller's replacement for external descriptor `key`. */
export const externalKey = (key: string): string => `external:${key}`;

export const fdExternal: FdKind<'external', { fd: number; flags: number; key: string; holder: string }> = {
  kind: 'external',
  record,
  matches: (info) => info.outside !== null,
  dump(ctx, info) {
    const key = info.target;
    const holder = info.outside!;
    ctx.warn(
      `fd ${info.fd} is ${key}, shared with ${holder} outside the dump: a restore needs a replacement (--inherit-fd fd[N]:${key})`,
    );
    return { fd: info.fd, flags: info.fdinfo.flags, key, holder };
  },
  restore(_ctx, rec, fds) {
    // Checked by restore() before anything ran: the caller gave one.
    fds.place(rec.fd, fds.borrow(externalKey(rec.key))!, rec.flags);
  },
};
