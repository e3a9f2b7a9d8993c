// File locks the process holds: flock() locks and OFD locks (of an open file, so of the descriptor
// that opened it and its duplicates), POSIX record locks (of the process, on a file whichever
// descriptor names it) and leases. Read from the `lock:` lines of its descriptors' fdinfo, taken
// again by the restored process on its own descriptors (non-blocking: a lock another process holds
// by then fails the restore, by name: a process that lost its lock could have a second writer).
import { FerryError } from '../errors.js';
import { array, hex64, integer, nullable, object, oneOf, type Infer } from '../image/schema.js';
import { parseLock } from '../proc/locks.js';
import { readProcLink } from '../proc/files.js';
import { isErrno } from '../sys/errno.js';
import { NR } from '../sys/nr.js';
import { unsupportedMessage, type DumpContext, type RestoreContext } from './context.js';
import type { FdInfo } from './fd-kind.js';

const lockRecord = object({
  /** A descriptor of the lock's file: of its open file, for all but POSIX locks. */
  fd: integer(0, 1 << 20),
  kind: oneOf(['flock', 'posix', 'ofd', 'lease'] as const),
  type: oneOf(['read', 'write'] as const),
  start: hex64,
  /** The last byte, or null: to the end of the file. */
  end: nullable(hex64),
});
export const locksRecord = array(lockRecord, { max: 1 << 16 });
export type LocksRecord = Infer<typeof locksRecord>;

/**
 * The locks of the descriptors `infos`; `shared` tells the descriptors whose open file another one
 * (earlier, or in a parent) stands for, which carry none of their own.
 */
export function dumpLocks(
  ctx: DumpContext,
  infos: readonly FdInfo[],
  shared: (fd: number) => boolean,
): LocksRecord {
  const out: LocksRecord = [];
  const seen = new Set<string>();
  for (const info of infos) {
    for (const { key, value } of info.fdinfo.records) {
      if (key !== 'lock') continue;
      const lock = parseLock(value, `/proc/${ctx.pid}/fdinfo/${info.fd}`);
      const refuse = (why: string): never => {
        throw new FerryError(
          'FERRY_UNSUPPORTED_STATE',
          unsupportedMessage(
            ctx.pid,
            `fd ${info.fd} (${info.target}) has ${why}`,
            'which ferry cannot checkpoint',
          ),
        );
      };
      if ('unknown' in lock) return refuse(`the lock "${lock.unknown}"`);
      if (lock.kind === 'lease' && lock.mode !== 'ACTIVE') refuse(`a lease being broken (${lock.mode})`);
      // A POSIX lock is the process's, shown on each of its descriptors of the file; the others are
      // their open file's, shown on each descriptor of it.
      if (lock.kind === 'posix' && lock.pid !== ctx.pid)
        refuse(`a POSIX lock of process ${lock.pid}, which shares its descriptor table`);
      if (lock.kind !== 'posix' && shared(info.fd)) continue;
      const id = `${lock.kind}:${lock.dev}:${lock.inode}:${lock.start}:${lock.end}:${lock.type}`;
      if (lock.kind === 'posix' ? seen.has(id) : false) continue;
      seen.add(id);
      out.push({ fd: info.fd, kind: lock.kind, type: lock.type, start: lock.start, end: lock.end });
    }
  }
  return out;
}

const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;
const F_SETLK = 6;
const F_OFD_SETLK = 37;
const F_SETLEASE = 1024;
const F_RDLCK = 0;
const F_WRLCK = 1;

/** struct flock for F_SETLK and F_OFD_SETLK: from SEEK_SET, a length of 0 meaning to the end. */
function flockStruct(lock: LocksRecord[number]): Buffer {
  const buf = Buffer.alloc(32);
  buf.writeInt16LE(lock.type === 'read' ? F_RDLCK : F_WRLCK, 0);
  buf.writeBigInt64LE(lock.start, 8);
  buf.writeBigInt64LE(lock.end === null ? 0n : lock.end - lock.start + 1n, 16);
  return buf;
}

const WORDS = { flock: 'flock() lock', posix: 'POSIX record lock', ofd: 'OFD lock', lease: 'lease' };

/** Take the locks again, in the restored process, once its descriptors are in place. */
export function restoreLocks(ctx: RestoreContext, locks: LocksRecord): void {
  const remote = ctx.remote;
  for (const lock of locks) {
    const type = lock.type === 'read' ? F_RDLCK : F_WRLCK;
    const what = `${lock.kind}(fd ${lock.fd})`;
    remote.withData(() => {
      try {
        if (lock.kind === 'flock')
          remote.check(what, NR.flock, lock.fd, (lock.type === 'read' ? LOCK_SH : LOCK_EX) | LOCK_NB);
        else if (lock.kind === 'lease') remote.check(what, NR.fcntl, lock.fd, F_SETLEASE, type);
        else
          remote.check(
            what,
            NR.fcntl,
            lock.fd,
            lock.kind === 'ofd' ? F_OFD_SETLK : F_SETLK,
            remote.put(flockStruct(lock)),
          );
      } catch (err) {
        if (!isErrno(err, 'EAGAIN', 'EACCES')) throw err;
        const range =
          lock.kind === 'posix' || lock.kind === 'ofd' ? ` of bytes ${lock.start}-${lock.end ?? 'EOF'}` : '';
        throw new FerryError(
          'FERRY_RESTORE_FAILED',
          `the ${lock.type} ${WORDS[lock.kind]}${range} that fd ${lock.fd} held on ${readProcLink(ctx.pid, `fd/${lock.fd}`)} conflicts with another process's lock now: the process would run without it`,
          { cause: err },
        );
      }
    });
  }
}
