// poll(2): which of some descriptors are readable, waiting up to a timeout.
import { syscall, syscallAsync } from './call.js';
import { NR } from './nr.js';

const POLLIN = 1;
const POLLFD = 8;

/** struct pollfd[] asking for POLLIN on each of `fds`. */
function pollfds(fds: readonly number[]): Buffer {
  const buf = Buffer.alloc(fds.length * POLLFD);
  fds.forEach((fd, i) => {
    buf.writeInt32LE(fd, i * POLLFD);
    buf.writeInt16LE(POLLIN, i * POLLFD + 4);
  });
  return buf;
}

/** Those of `fds` whose revents poll() set (readable, or hung up / in error: a read says which). */
function ready(fds: readonly number[], buf: Buffer): number[] {
  return fds.filter((_, i) => buf.readInt16LE(i * POLLFD + 6) !== 0);
}

/** Those of `fds` readable now or within `timeoutMs`. */
export function readable(fds: readonly number[], timeoutMs: number): number[] {
  const buf = pollfds(fds);
  syscall(NR.poll, 'poll', () => fds.map(String), buf, fds.length, timeoutMs);
  return ready(fds, buf);
}

/** readable() on one of libuv's threads: the main thread goes on meanwhile. */
export async function readableAsync(fds: readonly number[], timeoutMs: number): Promise<number[]> {
  const buf = pollfds(fds);
  await syscallAsync(NR.poll, 'poll', () => fds.map(String), buf, fds.length, timeoutMs);
  return ready(fds, buf);
}
