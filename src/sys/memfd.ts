// memfd_create(2): an anonymous file, used to hand the restore stub to exec without touching disk.
import { syscall } from './call.js';

import { NR } from './nr.js';

export const MFD_CLOEXEC = 1;

export function memfdCreate(name: string, flags: number): number {
  return syscall(NR.memfd_create, 'memfd_create', () => [name], Buffer.from(`${name}\0`), flags);
}
