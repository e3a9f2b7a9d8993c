// The filesystem context: working directory and umask.
import { FerryError } from '../errors.js';
import { integer, object, string, type Infer } from '../image/schema.js';
import { readProcLink } from '../proc/files.js';
import { NR } from '../sys/nr.js';
import { asUser, unsupportedMessage, type DumpContext, type RestoreContext } from './context.js';

export const fsRecord = object({ cwd: string({ max: 4096 }), umask: integer(0, 0o777) });
export type FsRecord = Infer<typeof fsRecord>;

export function dumpFs(ctx: DumpContext): FsRecord {
  const root = readProcLink(ctx.pid, 'root');
  if (root !== '/') {
    throw new FerryError(
      'FERRY_UNSUPPORTED_STATE',
      unsupportedMessage(ctx.pid, `its root directory ${root}`, 'is not /'),
    );
  }
  const cwd = readProcLink(ctx.pid, 'cwd');
  if (cwd.endsWith(' (deleted)')) {
    throw new FerryError(
      'FERRY_UNSUPPORTED_STATE',
      unsupportedMessage(ctx.pid, `its working directory ${cwd}`, 'was deleted'),
    );
  }
  const umask = ctx.status.raw.Umask;
  if (umask === undefined || !/^[0-7]{1,4}$/.test(umask)) {
    throw new FerryError(
      'FERRY_PARSE',
      `/proc/${ctx.pid}/status: expected an octal Umask, got ${String(umask)}`,
    );
  }
  return { cwd, umask: parseInt(umask, 8) };
}

export function restoreFs(ctx: RestoreContext, rec: FsRecord): void {
  ctx.remote.batch([
    ...asUser(ctx, { name: `chdir(${rec.cwd})`, nr: NR.chdir, args: [ctx.remote.putString(rec.cwd)] }).calls,
    { name: 'umask', nr: NR.umask, args: [rec.umask] },
  ]);
}
