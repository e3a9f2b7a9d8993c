// System V shared memory: the segments the processes have attached (their VMAs show /SYSV<key>,
// with the segment's ID as inode), each with its key, size, owner and mode; its content is the
// attached VMAs' pages. Restore attaches the segment that is still there (the same ID, key and
// size: a killed process's segment outlives it), or makes it again under the same ID and key, and
// marks it for removal after the restore if it was so marked when dumped.
import { readFileSync } from 'node:fs';
import { FerryError } from '../errors.js';
import { array, boolean, integer, object, type Infer } from '../image/schema.js';
import { parseSysvShm, type ShmSegment } from '../proc/sysvipc.js';
import { isErrno } from '../sys/errno.js';
import { createSegment, IPC_PRIVATE, removeSegment, SHM_DEST } from '../sys/shm.js';
import type { Vma } from '../vma/vma.js';
import { unsupportedMessage, type DumpContext } from './context.js';

const SYSV_NAME = /^\/SYSV[0-9a-f]{8}$/;
const PAGE = 4096;

const segmentRecord = object({
  id: integer(0, 2 ** 31 - 1),
  key: integer(-(2 ** 31), 2 ** 31 - 1),
  size: integer(1, Number.MAX_SAFE_INTEGER),
  uid: integer(0, 2 ** 32 - 1),
  gid: integer(0, 2 ** 32 - 1),
  mode: integer(0, 0o777),
  /** Marked for removal (IPC_RMID) while still attached. */
  removed: boolean,
});
export const sysvRecord = array(segmentRecord, { max: 1 << 16 });
export type SysvRecord = Infer<typeof sysvRecord>;
type SegmentRecord = Infer<typeof segmentRecord>;

/** A VMA of a System V shared memory segment (its inode is the segment's ID). */
export const isSysv = (v: { kind: string; name: string }): boolean =>
  v.kind === 'anon-shared' && SYSV_NAME.test(v.name);

function segments(): ShmSegment[] {
  return parseSysvShm(readFileSync('/proc/sysvipc/shm', 'latin1'));
}

/** The segments the process has attached; each must be attached whole, in one VMA. */
export function dumpSysv(ctx: DumpContext, vmas: readonly Vma[]): SysvRecord {
  const all = new Map(segments().map((s) => [s.id, s]));
  const out = new Map<number, SegmentRecord>();
  for (const v of vmas.filter(isSysv)) {
    const id = Number(v.inode);
    const refuse = (why: string): never => {
      const range = `VMA 0x${v.start.toString(16)}-0x${v.end.toString(16)} (SysV shared memory ${id})`;
      throw new FerryError('FERRY_UNSUPPORTED_STATE', unsupportedMessage(ctx.pid, range, why));
    };
    const s = all.get(id) ?? refuse('is of a segment /proc/sysvipc/shm does not list');
    const whole = BigInt(Math.ceil(s.size / PAGE) * PAGE);
    if (v.offset !== 0n || v.end - v.start !== whole)
      refuse(`maps part of the segment (${s.size} bytes), which ferry cannot checkpoint`);
    const removed = (s.mode & SHM_DEST) !== 0;
    out.set(id, { id, key: s.key, size: s.size, uid: s.uid, gid: s.gid, mode: s.mode & 0o777, removed });
  }
  return [...out.values()];
}

/** Whether the segment's mode lets `user` read and write it (as its owner, its group, or other). */
function readWrite(s: ShmSegment, user: { fsuid: number; fsgid: number }): boolean {
  const shift = s.uid === user.fsuid ? 6 : s.gid === user.fsgid ? 3 : 0;
  return ((s.mode >> shift) & 6) === 6;
}

/** The segments of a restore: found or made once for the whole tree. */
export class SysvSegments {
  private readonly ready = new Set<number>();
  private readonly made: SegmentRecord[] = [];

  /**
   * Have every segment of `recs` there under its ID, made again where it is gone. A restore made
   * for a `user` attaches no segment already there that the user could not attach itself.
   */
  prepare(recs: SysvRecord, user?: { fsuid: number; fsgid: number }): void {
    for (const rec of recs) {
      if (this.ready.has(rec.id)) continue;
      const there = segments().find((s) => s.id === rec.id);
      if (there && user && !readWrite(there, user))
        throw new FerryError(
          'FERRY_AUTH',
          `SysV shared memory ${rec.id} is there, and uid ${user.fsuid} may not read and write it (mode ${there.mode.toString(8)}, uid ${there.uid})`,
        );
      if (there) {
        const same = there.size === rec.size && (there.key === rec.key || rec.key === IPC_PRIVATE);
        if (!same)
          throw new FerryError(
            'FERRY_RESTORE_FAILED',
            `SysV shared memory ID ${rec.id} is taken by another segment (key ${there.key}, ${there.size} bytes)`,
          );
      } else {
        const key = rec.removed ? IPC_PRIVATE : rec.key;
        let got: number;
        try {
          got = createSegment(rec.id, key, rec.size, rec.uid, rec.gid, rec.mode);
        } catch (err) {
          if (!isErrno(err, 'EEXIST')) throw err;
          throw new FerryError(
            'FERRY_RESTORE_FAILED',
            `SysV shared memory key ${key} is taken by another segment`,
          );
        }
        this.made.push(rec);
        if (got !== rec.id) {
          removeSegment(got);
          throw new FerryError(
            'FERRY_RESTORE_FAILED',
            `cannot make SysV shared memory ${rec.id} again under its ID`,
          );
        }
      }
      this.ready.add(rec.id);
    }
  }

  /**
   * Once the tree is restored (`ok`) or has failed: mark for removal the segments made here that
   * were so marked when dumped, or all of them after a failure.
   */
  finish(ok: boolean): void {
    for (const rec of this.made.splice(0)) if (rec.removed || !ok) removeSegment(rec.id);
  }
}
