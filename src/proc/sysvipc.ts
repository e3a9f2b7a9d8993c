// /proc/sysvipc/shm: the System V shared memory segments of this IPC namespace, one line each
// after a header: key shmid perms size cpid lpid nattch uid gid cuid cgid atime dtime ctime rss swap.
// `perms` is octal and carries SHM_DEST (01000) once the segment is marked for removal.
import { parseError } from './parse-error.js';

export interface ShmSegment {
  key: number;
  id: number;
  mode: number;
  size: number;
  attached: number;
  uid: number;
  gid: number;
}

const LINE = /^\s*(-?\d+)\s+(\d+)\s+([0-7]+)\s+(\d+)\s+\d+\s+\d+\s+(\d+)\s+(\d+)\s+(\d+)\s/;

export function parseSysvShm(text: string, source = '/proc/sysvipc/shm'): ShmSegment[] {
  const lines = text.split('\n');
  return lines.slice(1).flatMap((line, i) => {
    if (line.trim() === '') return [];
    const m = LINE.exec(line);
    if (!m) throw parseError(source, i + 2, '"key shmid perms size cpid lpid nattch uid gid ..."', line);
    return [
      {
        key: Number(m[1]),
        id: Number(m[2]),
        mode: parseInt(m[3]!, 8),
        size: Number(m[4]),
        attached: Number(m[5]),
        uid: Number(m[6]),
        gid: Number(m[7]),
      },
    ];
  });
}
