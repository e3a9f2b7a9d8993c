// The filesystem context: working directory and umask. A working directory deleted since the
// process entered it comes back as one: an empty directory of its mode, made at its old path (or in
// the temporary directory when that is taken or its parent is gone), entered, and removed again.
import { randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { FerryError } from '../errors.js';
import { integer, nullable, object, string, type Infer } from '../image/schema.js';
import { readProcLink } from '../proc/files.js';
import { NR } from '../sys/nr.js';
import type { RemoteCall } from '../tracee/remote.js';
import { asUser, unsupportedMessage, type DumpContext, type RestoreContext } from './context.js';

export const fsRecord = object({
  cwd: string({ max: 4096 }),
  umask: integer(0, 0o777),
  /** Of a working directory deleted since: its mode; null when it is there (none before version 8). */
  cwdDeleted: nullable(integer(0, 0o7777)),
});
export type FsRecord = Infer<typeof fsRecord>;

export function dumpFs(ctx: DumpContext): FsRecord {
  const root = readProcLink(ctx.pid, 'root');
  if (root !== '/') {
    throw new FerryError(
      'FERRY_UNSUPPORTED_STATE',
      unsupportedMessage(ctx.pid, `its root directory ${root}`, 'is not /'),
    );
  }
  const link = readProcLink(ctx.pid, 'cwd');
  const deleted = link.endsWith(' (deleted)');
  const cwd = deleted ? link.slice(0, -' (deleted)'.length) : link;
  const umask = ctx.status.raw.Umask;
  if (umask === undefined || !/^[0-7]{1,4}$/.test(umask)) {
    throw new FerryError(
      'FERRY_PARSE',
      `/proc/${ctx.pid}/status: expected an octal Umask, got ${String(umask)}`,
    );
  }
  const cwdDeleted = deleted ? statSync(`/proc/${ctx.pid}/cwd`).mode & 0o7777 : null;
  return { cwd, umask: parseInt(umask, 8), cwdDeleted };
}

export function restoreFs(ctx: RestoreContext, rec: FsRecord): void {
  const remote = ctx.remote;
  const cwd = rec.cwdDeleted === null ? rec.cwd : deletedDir(rec.cwd);
  const at = remote.putString(cwd);
  const call = (name: string, nr: number, ...args: (number | bigint)[]): RemoteCall[] =>
    asUser(ctx, { name: `${name}(${cwd})`, nr, args: [at, ...args] }).calls;
  remote.batch([
    ...(rec.cwdDeleted === null ? [] : call('mkdir', NR.mkdir, rec.cwdDeleted)),
    ...call('chdir', NR.chdir),
    ...(rec.cwdDeleted === null ? [] : call('rmdir', NR.rmdir)),
    { name: 'umask', nr: NR.umask, args: [rec.umask] },
  ]);
}

/** Where to make a deleted working directory again: its old path if free and its parent is there. */
function deletedDir(path: string): string {
  return existsSync(dirname(path)) && !existsSync(path)
    ? path
    : join(tmpdir(), `.ferry-cwd-${randomBytes(6).toString('hex')}`);
}
