// Pseudo-terminals whose master a process of the dump holds (tmux, screen, script, sshd): the master
// is saved with the pty's index, lock, packet mode, the slave's termios and the window size; the
// slave descriptors of the tree (fd-tty.ts) and the controlling terminal of the sessions on it are
// tied to it by that index. Restore opens /dev/ptmx until the kernel hands out the same index (the
// lowest free one comes first), so /dev/pts/N keeps its name; if another pty took it meanwhile the
// next is used and the restore says so. Bytes queued in the terminal, not read yet, are dropped
// (warned).
import { chmodSync, chownSync, closeSync, statSync } from 'node:fs';
import { base64, boolean, integer, nullable, object, type Infer } from '../image/schema.js';
import { AT_FDCWD, O } from '../sys/fcntl.js';
import { NR } from '../sys/nr.js';
import { pidfdGetfd, pidfdOpen } from '../sys/pidfd.js';
import { ptsIndex, readPtyMaster, TTY } from '../sys/tty.js';
import type { DumpContext } from './context.js';
import {
  major,
  minor,
  setStatusFlags,
  type FdBuilder,
  type FdKind,
  type FilesRestoreContext,
} from './fd-kind.js';
import type { TreeFiles } from './fd-shared.js';

/** /dev/ptmx: 5:2. */
const PTMX = { major: 5, minor: 2 };
/** How far past the index it wants a restore opens ptys before it takes another. */
const MAX_PTYS = 4096;

const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  /** /dev/pts/<index>. */
  index: integer(0, 1 << 20),
  locked: boolean,
  packet: boolean,
  termios: nullable(base64(64)),
  winsize: base64(16),
  /** The slave device's owner and mode (grantpt). */
  uid: integer(0, 2 ** 32 - 1),
  gid: integer(0, 2 ** 32 - 1),
  mode: integer(0, 0o7777),
});
type PtyRecord = Infer<typeof record>;

/** The key under which a pty's master is made once and lent to the tree. */
export const ptyKey = (index: number): string => `pty:${index}`;

/** The master of pty `index`, made by an earlier descriptor of this process or lent by another. */
export function ptyMaster(fds: FdBuilder, index: number): number | undefined {
  return fds.shared(ptyKey(index), () => fds.borrow(ptyKey(index)));
}

export const fdPty: FdKind<'pty', PtyRecord> = {
  kind: 'pty',
  record,
  matches: (info) =>
    info.stat.isCharacterDevice() &&
    major(info.stat.rdev) === PTMX.major &&
    minor(info.stat.rdev) === PTMX.minor,
  dump(ctx, info) {
    const pidfd = pidfdOpen(ctx.pid);
    let copy: number;
    try {
      copy = pidfdGetfd(pidfd, info.fd);
    } finally {
      closeSync(pidfd);
    }
    try {
      const s = readPtyMaster(copy);
      ctx.tree.addPtyMaster(s.index);
      if (s.output + s.input > 0)
        ctx.warn(
          `fd ${info.fd} (the master of /dev/pts/${s.index}): ${s.output + s.input} byte(s) queued in the terminal, not read yet, are dropped`,
        );
      const slave = statSync(`/dev/pts/${s.index}`);
      return {
        fd: info.fd,
        flags: info.fdinfo.flags,
        index: s.index,
        locked: s.locked,
        packet: s.packet,
        termios: s.termios,
        winsize: s.winsize,
        uid: slave.uid,
        gid: slave.gid,
        mode: slave.mode & 0o7777,
      };
    } finally {
      closeSync(copy);
    }
  },
  restore(ctx, rec, fds) {
    const made = fds.shared(ptyKey(rec.index), () => makePty(ctx, rec, fds));
    setStatusFlags(fds, made, rec.flags);
    fds.place(rec.fd, made, rec.flags);
  },
};

/** Open /dev/ptmx until it gives pty `rec.index` (or one past it: that index is taken), then set it up. */
function makePty(ctx: FilesRestoreContext, rec: PtyRecord, fds: FdBuilder): number {
  const remote = ctx.remote;
  const out = remote.alloc(4);
  let made = -1;
  let index = -1;
  // Those opened on the way are parked, and closed with the rest once the process's are placed.
  for (let tries = 0; index < rec.index && tries <= Math.min(rec.index, MAX_PTYS); tries++) {
    made = fds.create({
      name: 'open(/dev/ptmx)',
      nr: NR.openat,
      args: [AT_FDCWD, remote.putString('/dev/ptmx'), O.RDWR | O.NOCTTY, 0],
    });
    fds.call({ name: 'ioctl(TIOCGPTN)', nr: NR.ioctl, args: [made, TTY.TIOCGPTN, out] });
    fds.flush();
    index = remote.read(out, 4).readInt32LE(0);
  }
  if (index !== rec.index)
    ctx.warn(`/dev/pts/${rec.index} was taken by another terminal: its pty comes back as /dev/pts/${index}`);
  const int = (value: number): bigint => {
    const buf = Buffer.alloc(4);
    buf.writeInt32LE(value);
    return remote.put(buf);
  };
  if (!rec.locked)
    fds.call({ name: 'ioctl(TIOCSPTLCK, 0)', nr: NR.ioctl, args: [made, TTY.TIOCSPTLCK, int(0)] });
  if (rec.packet) fds.call({ name: 'ioctl(TIOCPKT, 1)', nr: NR.ioctl, args: [made, TTY.TIOCPKT, int(1)] });
  fds.call({
    name: 'ioctl(TIOCSWINSZ)',
    nr: NR.ioctl,
    args: [made, TTY.TIOCSWINSZ, remote.put(rec.winsize)],
  });
  if (rec.termios && !rec.locked) {
    const slave = fds.create({
      name: 'ioctl(TIOCGPTPEER)',
      nr: NR.ioctl,
      args: [made, TTY.TIOCGPTPEER, O.RDWR | O.NOCTTY],
    });
    fds.call({ name: 'ioctl(TCSETS)', nr: NR.ioctl, args: [slave, TTY.TCSETS, remote.put(rec.termios)] });
  }
  fds.flush();
  const device = `/dev/pts/${index}`;
  chownSync(device, rec.uid, rec.gid);
  chmodSync(device, rec.mode);
  fds.lend(ptyKey(rec.index), made);
  return made;
}

/** The session's controlling terminal, when it is a pty whose master the dump holds. */
export const controllingRecord = nullable(
  object({
    /** The pty's index as dumped. */
    pty: integer(0, 1 << 20),
    /** Its foreground process group, or 0 to leave as it comes. */
    foreground: integer(0, 2 ** 22),
  }),
);
export type ControllingRecord = Infer<typeof controllingRecord>;

/**
 * A process's controlling terminal, if it is a pty of the dump's: given back by its session leader
 * (TIOCSCTTY on a descriptor of it, then TIOCSPGRP); what cannot be is warned about.
 */
export function dumpControlling(
  ctx: DumpContext,
  tree: TreeFiles,
  slaves: readonly { kind: string; pty?: number | null }[],
): ControllingRecord {
  const tty = ctx.stat.ttyNr;
  const index = ptsIndexOfTtyNr(tty);
  if (index === null || !tree.hasPtyMaster(index)) return null;
  if (ctx.stat.session !== ctx.pid) {
    ctx.warn(
      `its controlling terminal /dev/pts/${index} is its session leader's to set again: it comes back without one`,
    );
    return null;
  }
  if (!slaves.some((f) => f.kind === 'tty' && f.pty === index)) {
    ctx.warn(
      `it holds no descriptor of its controlling terminal /dev/pts/${index}: it comes back without one`,
    );
    return null;
  }
  return { pty: index, foreground: ctx.stat.tpgid > 0 ? ctx.stat.tpgid : 0 };
}

/** The /dev/pts index of a tty_nr of /proc/PID/stat (major bits 8-19, minor 0-7 and 20-31). */
const ptsIndexOfTtyNr = (tty: number): number | null =>
  ptsIndex((tty >> 8) & 0xfff, (tty & 0xff) | ((tty >>> 12) & 0xfff00));
