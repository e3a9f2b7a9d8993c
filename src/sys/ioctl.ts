// ioctl(2) and the _IOC request encoding.
import { syscall, syscallAsync } from './call.js';
import type { SysArg } from './libc.js';
import { NR } from './nr.js';

const IOC_WRITE = 1;
const IOC_READ = 2;

/** _IOR(type, nr, size): a request that passes a struct to the kernel (its name notwithstanding). */
export function ior(type: number, nr: number, size: number): number {
  return ((IOC_READ << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}

/** _IOWR(type, nr, size): a request that passes a struct both ways. */
export function iowr(type: number, nr: number, size: number): number {
  return (((IOC_READ | IOC_WRITE) << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}

/** ioctl(fd, request, arg); `name` is the request's symbolic name for error messages. */
export function ioctl(fd: number, request: number, name: string, arg: SysArg): number {
  return syscall(NR.ioctl, 'ioctl', () => [String(fd), name], fd, request, arg);
}

/** ioctl() on one of libuv's threads (syscallAsync()): for a request that takes long. */
export function ioctlAsync(fd: number, request: number, name: string, arg: SysArg): Promise<number> {
  return syscallAsync(NR.ioctl, 'ioctl', () => [String(fd), name], fd, request, arg);
}

/** An ioctl that reads one int (SIOCINQ, TIOCGPTN, ...). */
export function ioctlInt(fd: number, request: number, name: string): number {
  const out = new Int32Array(1);
  ioctl(fd, request, name, out);
  return out[0]!;
}
