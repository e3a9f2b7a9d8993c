// Ghost files: the content of a file that was deleted while open or mapped, saved in the image
// (up to GHOST_LIMIT bytes) and written back for the restore, under its old path when that is free,
// then unlinked again.
import { chownSync, existsSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { FerryError } from '../errors.js';
import { integer, object, string, type Infer } from '../image/schema.js';
import { unsupportedMessage, type DumpContext, type RestoreContext } from './context.js';

/** Largest deleted file saved in an image. */
export const GHOST_LIMIT = 64 << 20;

export const ghostRecord = object({
  part: string({ pattern: /^files\/[a-z0-9-]+$/ }),
  size: integer(0, GHOST_LIMIT),
  mode: integer(0, 0o7777),
  uid: integer(0, 2 ** 32 - 1),
  gid: integer(0, 2 ** 32 - 1),
});
export type GhostRecord = Infer<typeof ghostRecord>;

/** Save the content of the deleted file `source` (a /proc magic link to it) as image part `part`. */
export function saveGhost(ctx: DumpContext, what: string, source: string, part: string): GhostRecord {
  const { mode, uid, gid, size } = statSync(source);
  if (size > GHOST_LIMIT) {
    throw new FerryError(
      'FERRY_UNSUPPORTED_STATE',
      unsupportedMessage(
        ctx.pid,
        `${what}, a deleted file of ${size} bytes,`,
        `is larger than the ${GHOST_LIMIT >> 20} MiB ferry saves`,
      ),
    );
  }
  ctx.writePart(part, readFileSync(source));
  return { part, size, mode: mode & 0o7777, uid, gid };
}

/** The saved content of a ghost. */
export function ghostContent(ctx: RestoreContext, ghost: GhostRecord): Buffer {
  const reader = ctx.source.openPart(ghost.part);
  try {
    return reader.read(ghost.size);
  } finally {
    reader.close();
  }
}

/** Write a ghost back as a file the stub can open, at `path` if it is free; unlinked on cleanup. */
export function createGhost(ctx: RestoreContext, path: string, ghost: GhostRecord): string {
  const data = ghostContent(ctx, ghost);
  const dir = existsSync(dirname(path)) ? dirname(path) : tmpdir();
  for (const candidate of [path, join(dir, `.ferry-ghost-${randomBytes(6).toString('hex')}`)]) {
    try {
      writeFileSync(candidate, data, { flag: 'wx', mode: ghost.mode });
      chownSync(candidate, ghost.uid, ghost.gid);
      ctx.cleanup.push(() => unlinkSync(candidate));
      return candidate;
    } catch (err) {
      // Taken, or its directory is gone too: the next candidate (in a directory that exists).
      if (!(err instanceof Error && 'code' in err && (err.code === 'EEXIST' || err.code === 'ENOENT')))
        throw err;
    }
  }
  throw new FerryError('FERRY_RESTORE_FAILED', `cannot recreate the deleted file ${path}`);
}
