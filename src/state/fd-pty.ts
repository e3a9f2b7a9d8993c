// Pseudo-terminals whose master a process of the dump holds (tmux, screen, script, sshd): the master
// is saved with the pty's index, lock, packet mode, the slave's termios and the window size; the
// slave descriptors of the tree (fd-tty.ts) and the controlling terminal of the sessions on it are
// tied to it by that index. Restore makes each pty in ferry first, opening /dev/ptmx until the
// kernel hands out the same index (the lowest free one comes first), so /dev/pts/N keeps its name
// (if another pty took it meanwhile the next is used and the restore says so); each session leader
// takes its controlling terminal as it is made, so that its session's processes have it too. Bytes
// queued in the terminal, not read yet, are dropped (warned).
import { chmodSync, chownSync, closeSync, statSync } from 'node:fs';
import { base64, boolean, integer, nullable, object, type Infer } from '../image/schema.js';
import { O } from '../sys/fcntl.js';
import { NR } from '../sys/nr.js';
import { pidfdGetfd, pidfdOpen } from '../sys/pidfd.js';
import { openPty, ptsIndex, readPtyMaster, setUpPty, TTY } from '../sys/tty.js';
import type { DumpContext } from './context.js';
import { major, minor, setStatusFlags, type FdBuilder, type FdKind } from './fd-kind.js';
import type { TreeFds, TreeFiles } from './fd-shared.js';
import type { RemoteSyscalls } from '../tracee/remote.js';

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
  restore(_ctx, rec, fds) {
    // Made in ferry before the processes (makePtys()): borrowed from there.
    const made = ptyMaster(fds, rec.index)!;
    setStatusFlags(fds, made, rec.flags);
    fds.place(rec.fd, made, rec.flags);
  },
};

/**
 * Make, in ferry, the pty of each master of the image (once per index) before any process is, and
 * hold it for the processes to borrow: under the same /dev/pts/N when that is free (else the next,
 * said), with its lock, packet mode, window size, termios, owner and mode. Session leaders can then
 * take it as their controlling terminal as soon as they are made, before their children are.
 */
export function makePtys(recs: readonly PtyRecord[], tree: TreeFds, warn: (message: string) => void): void {
  for (const rec of new Map(recs.map((r) => [r.index, r])).values()) {
    const { master, index } = openPty(rec.index, MAX_PTYS);
    try {
      if (index !== rec.index)
        warn(`/dev/pts/${rec.index} was taken by another terminal: its pty comes back as /dev/pts/${index}`);
      setUpPty(master, rec);
      const device = `/dev/pts/${index}`;
      chownSync(device, rec.uid, rec.gid);
      chmodSync(device, rec.mode);
    } catch (err) {
      closeSync(master);
      throw err;
    }
    tree.keep(ptyKey(rec.index), master);
  }
}

/**
 * In a session leader's stub just made (no controlling terminal yet): take pty `held` (ferry's
 * descriptor of its master) as its controlling terminal, so that the processes of its session
 * forked after it have it too.
 */
export function takeTerminal(remote: RemoteSyscalls, held: number): void {
  const ferry = Number(remote.check('pidfd_open(ferry)', NR.pidfd_open, process.pid, 0));
  const master = Number(remote.check('pidfd_getfd(pty)', NR.pidfd_getfd, ferry, held, 0));
  const slave = Number(
    remote.check('ioctl(TIOCGPTPEER)', NR.ioctl, master, TTY.TIOCGPTPEER, O.RDWR | O.NOCTTY),
  );
  remote.check('ioctl(TIOCSCTTY)', NR.ioctl, slave, TTY.TIOCSCTTY, 0);
  for (const fd of [slave, master, ferry]) remote.check('close', NR.close, fd);
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
    // It inherits its session leader's, made as the leader is, before it.
    if (!tree.inTree(ctx.stat.session))
      ctx.warn(
        `its controlling terminal /dev/pts/${index} is its session leader's, which is not in the dump: it comes back without one`,
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
