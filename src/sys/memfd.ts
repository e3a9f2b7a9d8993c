// memfd_create(2): an anonymous file, used to hand the restore stub to exec without touching disk;
// and the seals of a process's memfd.
import { closeSync, openSync } from 'node:fs';
import { syscall } from './call.js';
import { O } from './fcntl.js';
import { NR } from './nr.js';

export const MFD_CLOEXEC = 1;

export function memfdCreate(name: string, flags: number): number {
  return syscall(NR.memfd_create, 'memfd_create', () => [name], Buffer.from(`${name}\0`), flags);
}

export const MFD_ALLOW_SEALING = 2;
export const F_ADD_SEALS = 1033;
const F_GET_SEALS = 1034;

/** The seals (F_SEAL_*) of the memfd behind `path` (a /proc/PID/fd/N link). */
export function memfdSeals(path: string): number {
  const fd = openSync(path, O.RDONLY);
  try {
    return syscall(NR.fcntl, 'fcntl(F_GET_SEALS)', () => [path], fd, F_GET_SEALS, 0);
  } finally {
    closeSync(fd);
  }
}
