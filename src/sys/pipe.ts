// Pipes in ferry itself: reading what a process's pipe holds without taking it out (tee(2)); pipe2.
import { closeSync, openSync, readSync } from 'node:fs';
import { syscall } from './call.js';
import { isErrno } from './errno.js';
import { O } from './fcntl.js';
import { NR } from './nr.js';

export const F_SETPIPE_SZ = 1031;
export const F_GETPIPE_SZ = 1032;
const SPLICE_F_NONBLOCK = 2;

function fcntl(fd: number, cmd: number, arg = 0): number {
  return syscall(NR.fcntl, 'fcntl', () => [String(fd), String(cmd), String(arg)], fd, cmd, arg);
}

/** pipe(2) with `flags` (O_CLOEXEC, O_NONBLOCK): [read end, write end]. */
export function pipe2(flags: number): [number, number] {
  const fds = new Int32Array(2);
  syscall(NR.pipe2, 'pipe2', () => [String(flags)], fds, flags);
  return [fds[0]!, fds[1]!];
}

/**
 * The bytes buffered in the pipe that `path` (/proc/PID/fd/N, either end) is, and the pipe's
 * capacity. The pipe keeps them: they are duplicated with tee into a pipe of ferry's and read there.
 */
export function peekPipe(path: string): { data: Buffer; capacity: number } {
  const fd = openSync(path, O.RDONLY | O.NONBLOCK);
  const opened = [fd];
  try {
    const capacity = fcntl(fd, F_GETPIPE_SZ);
    const [r, w] = pipe2(O.NONBLOCK | O.CLOEXEC);
    opened.push(r, w);
    if (fcntl(w, F_GETPIPE_SZ) < capacity) fcntl(w, F_SETPIPE_SZ, capacity);
    let length = 0;
    try {
      length = syscall(NR.tee, 'tee', () => [path], fd, w, capacity, SPLICE_F_NONBLOCK);
    } catch (err) {
      if (!isErrno(err, 'EAGAIN')) throw err; // empty
    }
    const data = Buffer.alloc(length);
    for (let got = 0; got < length;) got += readSync(r, data, got, length - got, null);
    return { data, capacity };
  } finally {
    for (const f of opened) closeSync(f);
  }
}
