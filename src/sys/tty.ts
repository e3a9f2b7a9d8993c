// Terminals: the ioctl requests that read and set a pseudo-terminal's state (asm-generic/ioctls.h),
// and the reads ferry makes on its own copy of a pty master.
import { closeSync, openSync } from 'node:fs';
import { ioctl, ioctlInt } from './ioctl.js';
import { O } from './fcntl.js';

export const TTY = {
  TCGETS: 0x5401,
  TCSETS: 0x5402,
  TIOCSCTTY: 0x540e,
  TIOCSPGRP: 0x5410,
  TIOCGWINSZ: 0x5413,
  TIOCSWINSZ: 0x5414,
  FIONREAD: 0x541b,
  TIOCPKT: 0x5420,
  TIOCGPTN: 0x80045430,
  TIOCSPTLCK: 0x40045431,
  TIOCGPKT: 0x80045438,
  TIOCGPTLCK: 0x80045439,
  TIOCGPTPEER: 0x5441,
} as const;
/** The kernel's struct termios (not glibc's, which is larger), and struct winsize. */
export const TERMIOS_SIZE = 36;
export const WINSIZE_SIZE = 8;

/** The /dev/pts index of a pty slave device (majors 136-143, 256 minors each), or null. */
export function ptsIndex(major: number, minor: number): number | null {
  return major >= 136 && major <= 143 ? (major - 136) * 256 + minor : null;
}

export interface PtyMasterState {
  index: number;
  locked: boolean;
  packet: boolean;
  /** The slave side's struct termios, or null while the pty is locked (its slave cannot open). */
  termios: Buffer | null;
  winsize: Buffer;
  /** Bytes written by the slave side and not read by the master's holder yet, and the reverse. */
  output: number;
  input: number;
}

/** What ferry's descriptor `master` on a pty master shows of it (the slave opened and closed again). */
export function readPtyMaster(master: number): PtyMasterState {
  const locked = ioctlInt(master, TTY.TIOCGPTLCK, 'TIOCGPTLCK') !== 0;
  const winsize = Buffer.alloc(WINSIZE_SIZE);
  ioctl(master, TTY.TIOCGWINSZ, 'TIOCGWINSZ', winsize);
  let termios: Buffer | null = null;
  let input = 0;
  if (!locked) {
    const slave = ioctl(master, TTY.TIOCGPTPEER, 'TIOCGPTPEER', O.RDWR | O.NOCTTY | O.NONBLOCK | O.CLOEXEC);
    try {
      termios = Buffer.alloc(TERMIOS_SIZE);
      ioctl(slave, TTY.TCGETS, 'TCGETS', termios);
      input = ioctlInt(slave, TTY.FIONREAD, 'FIONREAD');
    } finally {
      closeSync(slave);
    }
  }
  return {
    index: ioctlInt(master, TTY.TIOCGPTN, 'TIOCGPTN'),
    locked,
    packet: ioctlInt(master, TTY.TIOCGPKT, 'TIOCGPKT') !== 0,
    termios,
    winsize,
    output: ioctlInt(master, TTY.FIONREAD, 'FIONREAD'),
    input,
  };
}

/**
 * A new pty of ferry's: /dev/ptmx opened until the kernel gives index `want` (the lowest free one
 * comes first), or past it when that one is taken. Returns its master (the others opened on the
 * way are closed) and its index.
 */
export function openPty(want: number, maxTries: number): { master: number; index: number } {
  const opened: number[] = [];
  try {
    let index = -1;
    for (let tries = 0; index < want && tries <= Math.min(want, maxTries); tries++) {
      opened.push(openSync('/dev/ptmx', O.RDWR | O.NOCTTY | O.CLOEXEC));
      index = ioctlInt(opened.at(-1)!, TTY.TIOCGPTN, 'TIOCGPTN');
    }
    return { master: opened.pop()!, index };
  } finally {
    for (const fd of opened) closeSync(fd);
  }
}

/** Give ferry's pty master its lock, packet mode, window size and (through its slave) termios. */
export function setUpPty(
  master: number,
  state: { locked: boolean; packet: boolean; winsize: Buffer; termios: Buffer | null },
): void {
  if (!state.locked) ioctl(master, TTY.TIOCSPTLCK, 'TIOCSPTLCK', new Int32Array([0]));
  if (state.packet) ioctl(master, TTY.TIOCPKT, 'TIOCPKT', new Int32Array([1]));
  ioctl(master, TTY.TIOCSWINSZ, 'TIOCSWINSZ', state.winsize);
  if (state.termios === null || state.locked) return;
  const slave = ioctl(master, TTY.TIOCGPTPEER, 'TIOCGPTPEER', O.RDWR | O.NOCTTY | O.CLOEXEC);
  try {
    ioctl(slave, TTY.TCSETS, 'TCSETS', state.termios);
  } finally {
    closeSync(slave);
  }
}
