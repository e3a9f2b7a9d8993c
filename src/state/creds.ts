// Credentials: user and group IDs, supplementary groups, and the dumpable flag (which a change of
// IDs resets, so it is set again after them).
import { array, integer, object, type Infer } from '../image/schema.js';
import { NR } from '../sys/nr.js';
import { PR } from '../sys/prctl.js';
import type { DumpContext, RestoreContext } from './context.js';

const id = integer(0, 2 ** 32 - 1);
export const credsRecord = object({
  uids: array(id, { length: 4 }),
  gids: array(id, { length: 4 }),
  groups: array(id, { max: 65536 }),
  dumpable: integer(0, 2),
});
export type CredsRecord = Infer<typeof credsRecord>;

export function dumpCreds(ctx: DumpContext): CredsRecord {
  const [dumpable] = ctx.remote.batch([
    { name: 'prctl(PR_GET_DUMPABLE)', nr: NR.prctl, args: [PR.GET_DUMPABLE, 0, 0, 0, 0] },
  ]);
  return {
    uids: ctx.status.uids,
    gids: ctx.status.gids,
    groups: ctx.status.groups,
    dumpable: Number(dumpable),
  };
}

/** setresuid comes last: after it, the stub may have lost the privilege the other calls need. */
export function restoreCreds(ctx: RestoreContext, rec: CredsRecord): void {
  const groups = Buffer.alloc(Math.max(4, rec.groups.length * 4));
  rec.groups.forEach((g, i) => groups.writeUInt32LE(g, i * 4));
  const [ruid, euid, suid] = rec.uids;
  const [rgid, egid, sgid] = rec.gids;
  ctx.remote.batch([
    { name: 'setgroups', nr: NR.setgroups, args: [rec.groups.length, ctx.remote.put(groups)] },
    { name: 'setresgid', nr: NR.setresgid, args: [rgid!, egid!, sgid!] },
    { name: 'setresuid', nr: NR.setresuid, args: [ruid!, euid!, suid!] },
    { name: 'prctl(PR_SET_DUMPABLE)', nr: NR.prctl, args: [PR.SET_DUMPABLE, rec.dumpable, 0, 0, 0] },
  ]);
}
