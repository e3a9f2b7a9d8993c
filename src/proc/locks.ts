// File locks as /proc/locks and the `lock:` lines of /proc/PID/fdinfo/FD show them (fs/locks.c,
// lock_get_status): `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`: the kind, its mode (a
// lease's state), read or write, the owner's PID (-1 for an OFD lock), the file's device and inode,
// and the first and last byte (EOF: to the end, however far it goes).
import { parseError } from './parse-error.js';

export type LockKind = 'flock' | 'posix' | 'ofd' | 'lease';

export interface FileLock {
  kind: LockKind;
  /** A lease's state (ACTIVE, BREAKING, BREAKER), else ADVISORY. */
  mode: string;
  type: 'read' | 'write';
  pid: number;
  /** The file: device (major:minor, hex) and inode. */
  dev: string;
  inode: bigint;
  start: bigint;
  /** The last byte locked, or null: to the end of the file. */
  end: bigint | null;
}

const KINDS: Record<string, LockKind> = { FLOCK: 'flock', POSIX: 'posix', OFDLCK: 'ofd', LEASE: 'lease' };

const LINE =
  /^\d+:\s+(\S+)\s+(ADVISORY|MANDATORY|ACTIVE|BREAKING|BREAKER)\s+(READ|WRITE|UNLCK)\s+(-?\d+)\s+([0-9a-f]+:[0-9a-f]+):(\d+)\s+(\d+)\s+(EOF|\d+)$/;

/**
 * One lock line (without `lock:`). A kind of lock ferry does not know (an NFS delegation), or an
 * unlocked entry, is returned as `unknown` with the line, for the caller to refuse by name.
 */
export function parseLock(text: string, source: string): FileLock | { unknown: string } {
  const m = LINE.exec(text.trim());
  if (!m) throw parseError(source, 0, '"<id>: <kind> <mode> <type> <pid> <dev>:<inode> <start> <end>"', text);
  const kind = KINDS[m[1]!];
  if (!kind || m[3] === 'UNLCK') return { unknown: text.trim() };
  return {
    kind,
    mode: m[2]!,
    type: m[3] === 'READ' ? 'read' : 'write',
    pid: Number(m[4]),
    dev: m[5]!,
    inode: BigInt(m[6]!),
    start: BigInt(m[7]!),
    end: m[8] === 'EOF' ? null : BigInt(m[8]!),
  };
}
