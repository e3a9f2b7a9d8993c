// open(2) flags and the *at() directory marker, for opens here and inside other processes; fallocate;
// close_range; the data stretches of a file.
import { syscall } from './call.js';
import { SysError } from './errno.js';
import { trySyscall } from './libc.js';
import { NR } from './nr.js';

export const AT_FDCWD = -100;

export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  ACCMODE: 0o3,
  CREAT: 0o100,
  EXCL: 0o200,
  NOCTTY: 0o400,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  NONBLOCK: 0o4000,
  ASYNC: 0o20000,
  LARGEFILE: 0o100000,
  CLOEXEC: 0o2000000,
} as const;

/** fallocate(2) modes. */
const FALLOC_FL = { KEEP_SIZE: 0x01, PUNCH_HOLE: 0x02 } as const;

function fallocateMode(fd: number, mode: number, offset: number, length: number): void {
  syscall(
    NR.fallocate,
    mode === 0 ? 'fallocate' : 'fallocate(PUNCH_HOLE)',
    () => [String(fd), String(offset), String(length)],
    fd,
    mode,
    offset,
    length,
  );
}

/** Allocate the blocks of [offset, offset + length) of file `fd` now (growing the file to cover them). */
export function fallocate(fd: number, offset: number, length: number): void {
  fallocateMode(fd, 0, offset, length);
}

/** Drop [offset, offset + length) of file `fd`, page cache and blocks (it reads as zeros after). */
export function punchHole(fd: number, offset: number, length: number): void {
  fallocateMode(fd, FALLOC_FL.PUNCH_HOLE | FALLOC_FL.KEEP_SIZE, offset, length);
}

const CLOSE_RANGE_CLOEXEC = 1 << 2;

/**
 * Mark every descriptor from `first` up close-on-exec: what this process inherited (a pipe from the
 * shell that started it, say) then reaches no program it starts but through what it passes on purpose.
 */
export function cloexecFrom(first: number): void {
  syscall(
    NR.close_range,
    'close_range',
    () => [String(first), 'CLOEXEC'],
    first,
    0xffffffff,
    CLOSE_RANGE_CLOEXEC,
  );
}

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
/** lseek(2) reports no data past the offset. */
const ENXIO = 6;

/**
 * The stretches of [from, to) of file `fd` that hold data (lseek SEEK_DATA/SEEK_HOLE): pages
 * written, in memory or swapped, for tmpfs and shared memory; the rest reads as zeros.
 */
export function dataRanges(fd: number, from: number, to: number): { start: number; end: number }[] {
  const out: { start: number; end: number }[] = [];
  for (let at = from; at < to;) {
    const start = trySyscall(NR.lseek, fd, at, SEEK_DATA);
    if (start === -ENXIO || start >= to) break;
    if (start < 0) throw new SysError('lseek', [String(fd), String(at), 'SEEK_DATA'], -start);
    const end = Math.min(
      syscall(NR.lseek, 'lseek(SEEK_HOLE)', () => [String(fd), String(start)], fd, start, SEEK_HOLE),
      to,
    );
    out.push({ start, end });
    at = end;
  }
  return out;
}
