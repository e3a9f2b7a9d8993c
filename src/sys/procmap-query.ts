// The PROCMAP_QUERY ioctl on /proc/PID/maps (Linux 6.11+): look up one VMA by address without
// reading and parsing the whole maps text.
import { ioctl, iowr } from './ioctl.js';

const QUERY_SIZE = 104;
export const PROCMAP_QUERY = iowr(0x66, 17, QUERY_SIZE);

/** Flag: the VMA that covers the address, or failing that the next one. */
export const PROCMAP_QUERY_COVERING_OR_NEXT_VMA = 0x10n;

export interface ProcmapQueryResult {
  start: bigint;
  end: bigint;
  flags: bigint;
  offset: bigint;
  inode: bigint;
}

/** The VMA at or after `addr` in the maps file open as `mapsFd`. */
export function procmapQuery(mapsFd: number, addr: bigint, flags: bigint): ProcmapQueryResult {
  const q = Buffer.alloc(QUERY_SIZE);
  q.writeBigUInt64LE(BigInt(QUERY_SIZE), 0);
  q.writeBigUInt64LE(flags, 8);
  q.writeBigUInt64LE(addr, 16);
  ioctl(mapsFd, PROCMAP_QUERY, 'PROCMAP_QUERY', q);
  return {
    start: q.readBigUInt64LE(24),
    end: q.readBigUInt64LE(32),
    flags: q.readBigUInt64LE(40),
    offset: q.readBigUInt64LE(56),
    inode: q.readBigUInt64LE(64),
  };
}
