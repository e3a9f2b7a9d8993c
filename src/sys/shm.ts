// System V shared memory segments: made under a chosen ID (through kernel.shm_next_id), given
// their owner and mode, and removed.
import { readFileSync, writeFileSync } from 'node:fs';
import { syscall } from './call.js';
import { NR } from './nr.js';

export const IPC_PRIVATE = 0;
const IPC_CREAT = 0o1000;
const IPC_EXCL = 0o2000;
const IPC_RMID = 0;
const IPC_SET = 1;
const IPC_STAT = 2;
/** shmat flags. */
export const SHM_RDONLY = 0o10000;
export const SHM_REMAP = 0o40000;
export const SHM_EXEC = 0o100000;
/** In a segment's mode: IPC_RMID was called, it goes when the last process detaches. */
export const SHM_DEST = 0o1000;

/** struct shmid64_ds on x86_64: its ipc64_perm's uid, gid and mode, and its size. */
const SHMID_DS = 112;
const PERM_UID = 4;
const PERM_GID = 8;
const PERM_MODE = 20;

const NEXT_ID = '/proc/sys/kernel/shm_next_id';

/**
 * A new segment of `size` bytes with key `key` and ID `id` (the next one made gets it), owned by
 * `uid`:`gid` with permissions `mode`. Returns the ID it got: another than `id` when that was taken.
 */
export function createSegment(
  id: number,
  key: number,
  size: number,
  uid: number,
  gid: number,
  mode: number,
): number {
  writeFileSync(NEXT_ID, String(id));
  let got: number;
  try {
    const flags = IPC_CREAT | IPC_EXCL | (mode & 0o777);
    got = syscall(NR.shmget, 'shmget', () => [String(key), String(size)], key, size, flags);
  } finally {
    if (readFileSync(NEXT_ID, 'latin1').trim() !== '-1') writeFileSync(NEXT_ID, '-1');
  }
  const ds = Buffer.alloc(SHMID_DS);
  const describe = (): string[] => [String(got)];
  syscall(NR.shmctl, 'shmctl(IPC_STAT)', describe, got, IPC_STAT, ds);
  ds.writeUInt32LE(uid, PERM_UID);
  ds.writeUInt32LE(gid, PERM_GID);
  ds.writeUInt32LE(mode & 0o777, PERM_MODE);
  syscall(NR.shmctl, 'shmctl(IPC_SET)', describe, got, IPC_SET, ds);
  return got;
}

/** Mark segment `id` for removal: it goes once no process has it attached. */
export function removeSegment(id: number): void {
  syscall(NR.shmctl, 'shmctl(IPC_RMID)', () => [String(id)], id, IPC_RMID, null);
}
