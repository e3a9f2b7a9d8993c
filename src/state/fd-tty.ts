// Terminals: a descriptor on the controlling terminal (or any tty) is given back on the terminal the
// restore runs in, or on /dev/null.
import { integer, object, string } from '../image/schema.js';
import { major, reopen, reopenFlags, type FdKind } from './fd-kind.js';

/** Pseudo-terminal slaves (136-143), virtual consoles and serial lines (4), /dev/tty and /dev/console (5:0, 5:1). */
export function isTerminal(rdev: number): boolean {
  const maj = major(rdev);
  return (maj >= 136 && maj <= 143) || maj === 4 || rdev === 0x500 || rdev === 0x501;
}

const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  path: string({ max: 4096 }),
});

export const fdTty: FdKind<'tty', { fd: number; flags: number; path: string }> = {
  kind: 'tty',
  record,
  matches: (info) => info.stat.isCharacterDevice() && isTerminal(info.stat.rdev),
  dump: (_ctx, info) => ({ fd: info.fd, flags: info.fdinfo.flags, path: info.target }),
  restore: (ctx, rec, fds) =>
    reopen(ctx, fds, rec.fd, { path: ctx.terminal, flags: reopenFlags(rec.flags), pos: null }),
};
