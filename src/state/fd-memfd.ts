// memfd descriptors: the file's content is saved in the image (as a deleted file's is) with its
// seals, and restore gives back one memfd per file however many descriptors and VMAs of the tree
// have it (made once, held by ferry), each descriptor a file description of its own on it, at its
// position; the seals go on once.
import { hex64, integer, object, string, type Infer } from '../image/schema.js';
import { F_ADD_SEALS, memfdSeals } from '../sys/memfd.js';
import { NR } from '../sys/nr.js';
import { AT_FDCWD, O } from '../sys/fcntl.js';
import { setStatusFlags, type FdKind } from './fd-kind.js';
import { ghostRecord, heldMemfd, heldPath, saveGhost } from './ghost.js';

const MEMFD = /^\/memfd:(.*) \(deleted\)$/;
const SEEK_SET = 0;

const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  name: string({ max: 249 }),
  pos: hex64,
  seals: integer(0, 0xffff),
  content: ghostRecord,
});
type MemfdRecord = Infer<typeof record>;

export const fdMemfd: FdKind<'memfd', MemfdRecord> = {
  kind: 'memfd',
  record,
  matches: (info) => info.stat.isFile() && MEMFD.test(info.target),
  dump(ctx, info) {
    const source = `/proc/${ctx.pid}/fd/${info.fd}`;
    return {
      fd: info.fd,
      flags: info.fdinfo.flags,
      name: MEMFD.exec(info.target)![1]!,
      pos: info.fdinfo.pos,
      seals: memfdSeals(source),
      content: saveGhost(ctx, `fd ${info.fd} (${info.target})`, source, `files/memfd-${ctx.pid}-${info.fd}`),
    };
  },
  restore(ctx, rec, fds) {
    const held = heldMemfd(ctx, rec.name, rec.content);
    const made = fds.create({
      name: `open(memfd ${rec.name})`,
      nr: NR.openat,
      args: [AT_FDCWD, ctx.remote.putString(heldPath(held)), rec.flags & O.ACCMODE, 0],
    });
    if (rec.pos > 0n) fds.call({ name: 'lseek(memfd)', nr: NR.lseek, args: [made, rec.pos, SEEK_SET] });
    const missing = rec.seals & ~memfdSeals(`/proc/self/fd/${held}`);
    if (missing !== 0) {
      fds.call({ name: 'fcntl(F_ADD_SEALS)', nr: NR.fcntl, args: [made, F_ADD_SEALS, missing] });
      fds.flush(); // in place before another descriptor of this memfd looks
    }
    setStatusFlags(fds, made, rec.flags);
    fds.place(rec.fd, made, rec.flags);
  },
};
