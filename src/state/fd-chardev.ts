// Memory character devices (/dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom): they hold
// no state, so opening the same path again gives the same descriptor.
import { integer, object, string } from '../image/schema.js';
import { major, reopen, reopenFlags, type FdKind } from './fd-kind.js';

const MEM_MAJOR = 1;
const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  path: string({ max: 4096 }),
});

export const fdChardev: FdKind<'chardev', { fd: number; flags: number; path: string }> = {
  kind: 'chardev',
  record,
  matches: (info) =>
    info.stat.isCharacterDevice() && major(info.stat.rdev) === MEM_MAJOR && info.target.startsWith('/'),
  dump: (_ctx, info) => ({ fd: info.fd, flags: info.fdinfo.flags, path: info.target }),
  restore: (ctx, rec, fds) =>
    reopen(ctx, fds, rec.fd, { path: rec.path, flags: reopenFlags(rec.flags), pos: null }),
};
