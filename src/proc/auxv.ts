// /proc/PID/auxv: the ELF auxiliary vector, pairs of 64-bit (type, value) ending with AT_NULL.
import { FerryError } from '../errors.js';

export const AT = {
  NULL: 0,
  IGNORE: 1,
  EXECFD: 2,
  PHDR: 3,
  PHENT: 4,
  PHNUM: 5,
  PAGESZ: 6,
  BASE: 7,
  FLAGS: 8,
  ENTRY: 9,
  NOTELF: 10,
  UID: 11,
  EUID: 12,
  GID: 13,
  EGID: 14,
  PLATFORM: 15,
  HWCAP: 16,
  CLKTCK: 17,
  SECURE: 23,
  BASE_PLATFORM: 24,
  RANDOM: 25,
  HWCAP2: 26,
  RSEQ_FEATURE_SIZE: 27,
  RSEQ_ALIGN: 28,
  HWCAP3: 29,
  HWCAP4: 30,
  EXECFN: 31,
  SYSINFO_EHDR: 33,
  MINSIGSTKSZ: 51,
} as const;

const names = new Map<number, string>(Object.entries(AT).map(([name, type]) => [type, `AT_${name}`]));

export interface AuxvEntry {
  type: number;
  /** AT_* name, or `AT_<n>` for a type this table does not know. */
  name: string;
  value: bigint;
}

/** Parse auxv bytes; the terminating AT_NULL is not returned. */
export function parseAuxv(bytes: Buffer, source = 'auxv'): AuxvEntry[] {
  if (bytes.length % 16 !== 0) {
    throw new FerryError(
      'FERRY_PARSE',
      `${source}: ${bytes.length} bytes is not a whole number of 16-byte entries`,
    );
  }
  const entries: AuxvEntry[] = [];
  for (let off = 0; off < bytes.length; off += 16) {
    const type = bytes.readBigUInt64LE(off);
    if (type === 0n) return entries;
    const n = Number(type);
    entries.push({ type: n, name: names.get(n) ?? `AT_${n}`, value: bytes.readBigUInt64LE(off + 8) });
  }
  throw new FerryError('FERRY_PARSE', `${source}: no AT_NULL entry ends the vector`);
}
