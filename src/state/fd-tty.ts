// Terminals: a descriptor on the slave of a pty whose master the dump holds (a shell in a tmux pane)
// is opened again on that pty (TIOCGPTPEER on its master), and the session leader whose controlling
// terminal it was takes it back (TIOCSCTTY) with its foreground group; a descriptor on any other
// terminal is given back on the terminal the restore runs in, or on /dev/null.
import { FerryError } from '../errors.js';
import { integer, nullable, object, string, type Infer } from '../image/schema.js';
import { O } from '../sys/fcntl.js';
import { NR } from '../sys/nr.js';
import { ptsIndex, TTY } from '../sys/tty.js';
import { major, minor, reopen, reopenFlags, type FdKind } from './fd-kind.js';
import { ptyMaster } from './fd-pty.js';

/** Pseudo-terminal slaves (136-143), virtual consoles and serial lines (4), /dev/tty and /dev/console (5:0, 5:1). */
export function isTerminal(rdev: number): boolean {
  const maj = major(rdev);
  return (maj >= 136 && maj <= 143) || maj === 4 || rdev === 0x500 || rdev === 0x501;
}

const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  path: string({ max: 4096 }),
  /** The index of the pty whose master the dump holds, when it is one's slave; none before version 8. */
  pty: nullable(integer(0, 1 << 20)),
});
type TtyRecord = Infer<typeof record>;

export const fdTty: FdKind<'tty', TtyRecord> = {
  kind: 'tty',
  record,
  matches: (info) => info.stat.isCharacterDevice() && isTerminal(info.stat.rdev),
  dump(ctx, info) {
    const index = ptsIndex(major(info.stat.rdev), minor(info.stat.rdev));
    const pty = index !== null && ctx.tree.hasPtyMaster(index) ? index : null;
    return { fd: info.fd, flags: info.fdinfo.flags, path: info.target, pty };
  },
  restore(ctx, rec, fds) {
    if (rec.pty === null) {
      reopen(ctx, fds, rec.fd, { path: ctx.terminal, flags: reopenFlags(rec.flags), pos: null });
      return;
    }
    const master = ptyMaster(fds, rec.pty);
    if (master === undefined)
      throw new FerryError(
        'FERRY_IMAGE_CORRUPT',
        `fd ${rec.fd} is on /dev/pts/${rec.pty}, whose master the image lacks`,
      );
    const made = fds.create({
      name: `ioctl(TIOCGPTPEER, /dev/pts/${rec.pty})`,
      nr: NR.ioctl,
      args: [master, TTY.TIOCGPTPEER, (rec.flags & (O.ACCMODE | O.NONBLOCK | O.APPEND)) | O.NOCTTY],
    });
    fds.place(rec.fd, made, rec.flags);
    const controlling = ctx.controlling;
    if (controlling?.pty !== rec.pty) return;
    fds.shared('controlling terminal', () => {
      fds.after({ name: `ioctl(${rec.fd}, TIOCSCTTY)`, nr: NR.ioctl, args: [rec.fd, TTY.TIOCSCTTY, 0] });
      if (controlling.foreground !== 0) {
        const group = Buffer.alloc(4);
        group.writeInt32LE(controlling.foreground);
        fds.after({
          name: `ioctl(${rec.fd}, TIOCSPGRP, ${controlling.foreground})`,
          nr: NR.ioctl,
          args: [rec.fd, TTY.TIOCSPGRP, ctx.remote.put(group)],
        });
      }
      return true;
    });
  },
};
