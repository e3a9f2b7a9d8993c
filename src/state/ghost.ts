// Ghost files: the content of a file that was deleted while open or mapped, saved in the image
// (up to GHOST_LIMIT bytes) and written back for the restore, under its old path when that is free,
// then unlinked again. A memfd's content is saved the same way and given back as a memfd. A restore
// made for a user (RestoreContext.user) has the stub make and unlink the file with the user's file
// credentials: ferry's root creates or removes no path an image names.
import { chmodSync, chownSync, existsSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { FerryError } from '../errors.js';
import { hex64, integer, object, string, type Infer } from '../image/schema.js';
import { MFD_ALLOW_SEALING, MFD_CLOEXEC } from '../sys/memfd.js';
import { isErrno } from '../sys/errno.js';
import { AT_FDCWD, O } from '../sys/fcntl.js';
import { NR } from '../sys/nr.js';
import { checkAsUser, unsupportedMessage, type DumpContext, type RestoreContext } from './context.js';
import { deviceName } from './fd-kind.js';
import { shmemKey } from './fd-shared.js';

/** Largest deleted file saved in an image. */
export const GHOST_LIMIT = 64 << 20;

export const ghostRecord = object({
  part: string({ pattern: /^files\/[a-z0-9-]+$/ }),
  /** The file's device and inode, as /proc/PID/maps shows them: what is one file at restore too. */
  dev: string({ pattern: /^[0-9a-f]+:[0-9a-f]+$/ }),
  inode: hex64,
  size: integer(0, GHOST_LIMIT),
  mode: integer(0, 0o7777),
  uid: integer(0, 2 ** 32 - 1),
  gid: integer(0, 2 ** 32 - 1),
});
export type GhostRecord = Infer<typeof ghostRecord>;

/** Save the content of the deleted file `source` (a /proc magic link to it) as image part `part`. */
export function saveGhost(ctx: DumpContext, what: string, source: string, part: string): GhostRecord {
  const { mode, uid, gid, size, dev, ino } = statSync(source);
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
  return { part, dev: deviceName(dev), inode: BigInt(ino), size, mode: mode & 0o7777, uid, gid };
}

/** The saved content of a ghost, or of any part of `size` bytes. */
export function ghostContent(ctx: RestoreContext, ghost: Pick<GhostRecord, 'part' | 'size'>): Buffer {
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
      chmodSync(candidate, ghost.mode); // ferry's umask took bits off
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

/** The key ferry holds the file a ghost saved under, for every descriptor and VMA that has it. */
export const ghostKey = (ghost: GhostRecord): string => shmemKey(ghost.dev, ghost.inode);

/**
 * ferry's descriptor of the memfd named `name` that `ghost` saved: made in the stub with the
 * ghost's content by the first of the tree that has it. It allows sealing: a descriptor that had
 * seals puts them on.
 */
export function heldMemfd(ctx: RestoreContext, name: string, ghost: GhostRecord): number {
  const key = ghostKey(ghost);
  const held = ctx.tree.get(key);
  if (held !== undefined) return held;
  const remote = ctx.remote;
  const flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
  const fd = Number(remote.check(`memfd_create(${name})`, NR.memfd_create, remote.putString(name), flags));
  try {
    const made = `/proc/${ctx.pid}/fd/${fd}`;
    writeFileSync(made, ghostContent(ctx, ghost));
    // Its mode and owner as they were (memfd_create makes it 0777, the stub's).
    chmodSync(made, ghost.mode);
    if (!ctx.user || ctx.user.fsuid === ghost.uid) chownSync(made, ghost.uid, ghost.gid);
    return ctx.tree.holdPath(key, made);
  } finally {
    remote.check('close(memfd)', NR.close, fd);
  }
}

/** ferry's descriptor of the deleted file `ghost` saved: recreated by the first of the tree that has it. */
export function heldGhost(ctx: RestoreContext, path: string, ghost: GhostRecord): number {
  const key = ghostKey(ghost);
  const held = ctx.tree.get(key);
  if (held !== undefined) return held;
  if (ctx.user) return heldGhostAsUser(ctx, ctx.user, path, ghost);
  return ctx.tree.holdPath(key, createGhost(ctx, path, ghost));
}

/**
 * heldGhost() for a restore made for `user`: the stub makes the file with the user's credentials
 * (at its old path if the user may, else in the temporary directory; owned by the user), ferry fills
 * it through the stub's descriptor and holds it, and the stub unlinks it again as the user.
 */
function heldGhostAsUser(
  ctx: RestoreContext,
  user: NonNullable<RestoreContext['user']>,
  path: string,
  ghost: GhostRecord,
): number {
  const remote = ctx.remote;
  const flags = O.CREAT | O.EXCL | O.RDWR | O.CLOEXEC;
  for (const candidate of [path, join(tmpdir(), `.ferry-ghost-${randomBytes(6).toString('hex')}`)]) {
    let fd: number;
    try {
      fd = Number(
        checkAsUser(
          remote,
          user,
          `open(${candidate})`,
          NR.openat,
          AT_FDCWD,
          remote.putString(candidate),
          flags,
          ghost.mode,
        ),
      );
    } catch (err) {
      if (isErrno(err, 'EEXIST', 'ENOENT', 'EACCES', 'EPERM')) continue; // not there: the next place
      throw err;
    }
    try {
      writeFileSync(`/proc/${ctx.pid}/fd/${fd}`, ghostContent(ctx, ghost));
      if (ghost.uid !== user.fsuid)
        ctx.warn(`the deleted file ${path} of uid ${ghost.uid} comes back owned by uid ${user.fsuid}`);
      return ctx.tree.holdPath(ghostKey(ghost), `/proc/${ctx.pid}/fd/${fd}`);
    } finally {
      remote.check('close(ghost)', NR.close, fd);
      checkAsUser(remote, user, `unlink(${candidate})`, NR.unlink, remote.putString(candidate));
    }
  }
  throw new FerryError(
    'FERRY_RESTORE_FAILED',
    `uid ${user.fsuid} may not make the deleted file ${path} again, there nor in ${tmpdir()}`,
  );
}

/** The path a stub opens ferry's descriptor `held` by: a file description of its own on that file. */
export const heldPath = (held: number): string => `/proc/${process.pid}/fd/${held}`;
