// Regular files and directories, opened again by path at the same position. A file deleted while
// open is saved in the image (up to GHOST_LIMIT bytes) and recreated for the restore, then unlinked
// again: a ghost file.
import { chownSync, existsSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { FerryError } from '../errors.js';
import { hex64, integer, nullable, object, string, type Infer } from '../image/schema.js';
import { unsupportedMessage } from './context.js';
import { reopenFlags, type FdKind } from './fd-kind.js';

/** Largest deleted file saved in an image. */
export const GHOST_LIMIT = 64 << 20;
const DELETED = ' (deleted)';

const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  path: string({ max: 4096 }),
  pos: hex64,
  ghost: nullable(
    object({
      part: string({ pattern: /^files\/[0-9]+$/ }),
      size: integer(0, GHOST_LIMIT),
      mode: integer(0, 0o7777),
      uid: integer(0, 2 ** 32 - 1),
      gid: integer(0, 2 ** 32 - 1),
    }),
  ),
});
type FileRecord = Infer<typeof record>;

/** Write a deleted file's saved content back to a path the stub can open; it is unlinked afterwards. */
function createGhost(rec: FileRecord, ghost: NonNullable<FileRecord['ghost']>, data: Buffer): string {
  const dir = existsSync(dirname(rec.path)) ? dirname(rec.path) : tmpdir();
  const candidates = [rec.path, join(dir, `.ferry-ghost-${randomBytes(6).toString('hex')}`)];
  for (const path of candidates) {
    try {
      writeFileSync(path, data, { flag: 'wx', mode: ghost.mode });
      chownSync(path, ghost.uid, ghost.gid);
      return path;
    } catch (err) {
      if (!(err instanceof Error && 'code' in err && err.code === 'EEXIST')) throw err;
    }
  }
  throw new FerryError('FERRY_RESTORE_FAILED', `cannot recreate the deleted file ${rec.path}`);
}

export const fdFile: FdKind<'file', FileRecord> = {
  kind: 'file',
  record,
  matches: (info) => (info.stat.isFile() || info.stat.isDirectory()) && !info.target.startsWith('/memfd:'),
  dump(ctx, info) {
    const deleted = info.target.endsWith(DELETED);
    const path = deleted ? info.target.slice(0, -DELETED.length) : info.target;
    const base = { fd: info.fd, flags: info.fdinfo.flags, path, pos: info.fdinfo.pos };
    if (!deleted) return { ...base, ghost: null };
    if (info.stat.size > GHOST_LIMIT) {
      throw new FerryError(
        'FERRY_UNSUPPORTED_STATE',
        unsupportedMessage(
          ctx.pid,
          `fd ${info.fd}, the deleted file ${path} of ${info.stat.size} bytes,`,
          `is larger than the ${GHOST_LIMIT >> 20} MiB ferry saves`,
        ),
      );
    }
    const part = `files/${info.fd}`;
    ctx.writePart(part, readFileSync(`/proc/${ctx.pid}/fd/${info.fd}`));
    const { mode, uid, gid, size } = info.stat;
    return { ...base, ghost: { part, size, mode: mode & 0o7777, uid, gid } };
  },
  reopen(ctx, rec) {
    let path = rec.path;
    if (rec.ghost) {
      const reader = ctx.source.openPart(rec.ghost.part);
      const data = reader.read(rec.ghost.size);
      reader.close();
      path = createGhost(rec, rec.ghost, data);
      ctx.cleanup.push(() => unlinkSync(path));
    }
    return { path, flags: reopenFlags(rec.flags), pos: rec.pos };
  },
};
