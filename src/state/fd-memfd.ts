// memfd descriptors: the file's content is saved in the image (as a deleted file's is) with its
// seals, and restore makes a memfd of the same name, writes the content back, seeks and seals it.
import { writeFileSync } from 'node:fs';
import { hex64, integer, object, string, type Infer } from '../image/schema.js';
import { F_ADD_SEALS, MFD_ALLOW_SEALING, memfdSeals } from '../sys/memfd.js';
import { NR } from '../sys/nr.js';
import { setStatusFlags, type FdKind } from './fd-kind.js';
import { ghostContent, ghostRecord, saveGhost } from './ghost.js';

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
    const remote = ctx.remote;
    const flags = rec.seals === 0 ? 0 : MFD_ALLOW_SEALING;
    const made = fds.create({
      name: `memfd_create(${rec.name})`,
      nr: NR.memfd_create,
      args: [remote.putString(rec.name), flags],
    });
    fds.flush();
    writeFileSync(`/proc/${ctx.pid}/fd/${made}`, ghostContent(ctx, rec.content));
    if (rec.pos > 0n) fds.call({ name: 'lseek(memfd)', nr: NR.lseek, args: [made, rec.pos, SEEK_SET] });
    if (rec.seals !== 0)
      fds.call({ name: 'fcntl(F_ADD_SEALS)', nr: NR.fcntl, args: [made, F_ADD_SEALS, rec.seals] });
    setStatusFlags(fds, made, rec.flags);
    fds.place(rec.fd, made, rec.flags);
  },
};
