// Credentials: user and group IDs, supplementary groups, capability sets, securebits,
// no_new_privs, and the dumpable flag (which a change of IDs resets, so it is set again after them).
// They are each thread's: a thread whose differ from its process's (setfsuid, or raw setuid calls
// in one thread) has its own in the image.
import { readFileSync } from 'node:fs';
import { array, boolean, hex64, integer, object, type Infer } from '../image/schema.js';
import { readProcText } from '../proc/files.js';
import { parseStatus, type ProcStatus } from '../proc/status.js';
import { NR } from '../sys/nr.js';
import { PR, PR_CAP_AMBIENT, SECBIT } from '../sys/prctl.js';
import type { RemoteCall, RemoteSyscalls } from '../tracee/remote.js';
import type { RestoreContext } from './context.js';

const id = integer(0, 2 ** 32 - 1);
export const credsRecord = object({
  uids: array(id, { length: 4 }),
  gids: array(id, { length: 4 }),
  groups: array(id, { max: 65536 }),
  dumpable: integer(0, 2),
  caps: object({
    effective: hex64,
    permitted: hex64,
    inheritable: hex64,
    bounding: hex64,
    ambient: hex64,
  }),
  securebits: integer(0, 2 ** 31 - 1),
  noNewPrivs: boolean,
});
export type CredsRecord = Infer<typeof credsRecord>;

/** The credentials of the thread `remote` runs in, whose /proc status is `s`. */
export function dumpCreds(remote: RemoteSyscalls, s: ProcStatus): CredsRecord {
  const [dumpable, securebits] = remote.batch([
    { name: 'prctl(PR_GET_DUMPABLE)', nr: NR.prctl, args: [PR.GET_DUMPABLE, 0, 0, 0, 0] },
    { name: 'prctl(PR_GET_SECUREBITS)', nr: NR.prctl, args: [PR.GET_SECUREBITS, 0, 0, 0, 0] },
  ]);
  return {
    uids: s.uids,
    gids: s.gids,
    groups: s.groups,
    dumpable: Number(dumpable),
    caps: {
      effective: s.capEffective,
      permitted: s.capPermitted,
      inheritable: s.capInheritable,
      bounding: s.capBounding,
      ambient: s.capAmbient,
    },
    securebits: Number(securebits),
    noNewPrivs: s.noNewPrivs,
  };
}

/** Whether two threads' credentials are the same. */
export function sameCreds(a: CredsRecord, b: CredsRecord): boolean {
  return (
    JSON.stringify(a, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v)) ===
    JSON.stringify(b, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v))
  );
}

/** Capability numbers set in `mask`, up to the kernel's last. */
function capsIn(mask: bigint, last: number): number[] {
  return Array.from({ length: last + 1 }, (_, cap) => cap).filter((cap) => (mask >> BigInt(cap)) & 1n);
}

/** struct __user_cap_header_struct (version 3, this thread) and two __user_cap_data_structs. */
function capsetArgs(rec: CredsRecord): { header: Buffer; data: Buffer } {
  const header = Buffer.alloc(8);
  header.writeUInt32LE(0x20080522, 0);
  const data = Buffer.alloc(24);
  const { effective, permitted, inheritable } = rec.caps;
  [effective, permitted, inheritable].forEach((set, i) => {
    data.writeUInt32LE(Number(set & 0xffffffffn), i * 4);
    data.writeUInt32LE(Number(set >> 32n), 12 + i * 4);
  });
  return { header, data };
}

/** setgroups(2) of `groups`, through `remote`. */
export function setgroupsCall(remote: RemoteSyscalls, groups: readonly number[]): RemoteCall {
  const list = Buffer.alloc(Math.max(4, groups.length * 4));
  groups.forEach((g, i) => list.writeUInt32LE(g, i * 4));
  return { name: 'setgroups', nr: NR.setgroups, args: [groups.length, remote.put(list)] };
}

/**
 * While the stub is still root: groups, gids, the bounding set and securebits (with KEEP_CAPS,
 * so the permitted set survives setresuid); then the uids; then the capability sets, the file
 * system ids (setfsuid drops the file capabilities from the effective set only when the process
 * had done so), ambient capabilities, KEEP_CAPS as it was, dumpable, and last no_new_privs (which
 * cannot be undone). `first`: calls to run before them in the same batch. setfsuid and setfsgid
 * say nothing when they refuse: the ids are read back, and a difference is said.
 */
export function restoreCreds(ctx: RestoreContext, rec: CredsRecord, first: readonly RemoteCall[] = []): void {
  const remote = ctx.remote;
  const prctl = (name: string, ...args: number[]): RemoteCall => ({
    name: `prctl(${name})`,
    nr: NR.prctl,
    args: [...args, 0, 0, 0, 0].slice(0, 5),
  });
  const last = Number(readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8'));
  const [ruid, euid, suid] = rec.uids;
  const [rgid, egid, sgid] = rec.gids;
  const locked = (rec.securebits & SECBIT.KEEP_CAPS_LOCKED) !== 0;
  const keepCaps = (rec.securebits & SECBIT.KEEP_CAPS) !== 0;
  const { header, data } = capsetArgs(rec);
  const all = (1n << BigInt(last + 1)) - 1n;
  remote.withData(() =>
    remote.batch([
      ...first,
      setgroupsCall(remote, rec.groups),
      { name: 'setresgid', nr: NR.setresgid, args: [rgid!, egid!, sgid!] },
      ...capsIn(all & ~rec.caps.bounding, last).map((cap) =>
        prctl(`PR_CAPBSET_DROP, ${cap}`, PR.CAPBSET_DROP, cap),
      ),
      prctl('PR_SET_SECUREBITS', PR.SET_SECUREBITS, rec.securebits | (locked ? 0 : SECBIT.KEEP_CAPS)),
      { name: 'setresuid', nr: NR.setresuid, args: [ruid!, euid!, suid!] },
      { name: 'capset', nr: NR.capset, args: [remote.put(header), remote.put(data)] },
      { name: 'setfsgid', nr: NR.setfsgid, args: [rec.gids[3]!] },
      { name: 'setfsuid', nr: NR.setfsuid, args: [rec.uids[3]!] },
      prctl('PR_CAP_AMBIENT_CLEAR_ALL', PR.CAP_AMBIENT, PR_CAP_AMBIENT.CLEAR_ALL),
      ...capsIn(rec.caps.ambient, last).map((cap) =>
        prctl(`PR_CAP_AMBIENT_RAISE, ${cap}`, PR.CAP_AMBIENT, PR_CAP_AMBIENT.RAISE, cap),
      ),
      ...(keepCaps || locked ? [] : [prctl('PR_SET_KEEPCAPS, 0', PR.SET_KEEPCAPS, 0)]),
      prctl('PR_SET_DUMPABLE', PR.SET_DUMPABLE, rec.dumpable),
      ...(rec.noNewPrivs ? [prctl('PR_SET_NO_NEW_PRIVS', PR.SET_NO_NEW_PRIVS, 1)] : []),
    ]),
  );
  const now = parseStatus(readProcText(ctx.pid, `task/${remote.tid}/status`));
  if (now.uids[3] !== rec.uids[3] || now.gids[3] !== rec.gids[3])
    ctx.warn(
      `thread ${remote.tid} has file system uid ${now.uids[3]} and gid ${now.gids[3]}, not ${rec.uids[3]} and ${rec.gids[3]}: the kernel refused them`,
    );
}
