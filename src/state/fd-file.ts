// Regular files and directories, opened again by path at the same position. A file deleted while
// open is saved in the image and recreated for the restore (a ghost file, see ghost.ts), once for
// every descriptor and VMA of the tree that has it.
import { hex64, integer, nullable, object, string, type Infer } from '../image/schema.js';
import { reopen, reopenFlags, type FdKind } from './fd-kind.js';
import { ghostRecord, heldGhost, heldPath, saveGhost } from './ghost.js';

const DELETED = ' (deleted)';

const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  path: string({ max: 4096 }),
  pos: hex64,
  ghost: nullable(ghostRecord),
});
type FileRecord = Infer<typeof record>;

export const fdFile: FdKind<'file', FileRecord> = {
  kind: 'file',
  record,
  matches: (info) => (info.stat.isFile() || info.stat.isDirectory()) && !info.target.startsWith('/memfd:'),
  dump(ctx, info) {
    const deleted = info.target.endsWith(DELETED);
    const path = deleted ? info.target.slice(0, -DELETED.length) : info.target;
    const base = { fd: info.fd, flags: info.fdinfo.flags, path, pos: info.fdinfo.pos };
    if (!deleted) return { ...base, ghost: null };
    return {
      ...base,
      ghost: saveGhost(
        ctx,
        `fd ${info.fd} (${path})`,
        `/proc/${ctx.pid}/fd/${info.fd}`,
        `files/fd-${ctx.pid}-${info.fd}`,
      ),
    };
  },
  restore(ctx, rec, fds) {
    const spec = { flags: reopenFlags(rec.flags), pos: rec.pos };
    if (!rec.ghost) return reopen(ctx, fds, rec.fd, { ...spec, path: rec.path });
    // Through ferry's own descriptor of the file it made: no path of the image's, nothing to check
    // with the process's credentials.
    const path = heldPath(heldGhost(ctx, rec.path, rec.ghost));
    reopen({ ...ctx, user: undefined }, fds, rec.fd, { ...spec, path });
  },
};
