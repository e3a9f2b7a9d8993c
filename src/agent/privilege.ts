// What a caller whose token is bound to a uid may have the agent run: processes with that uid's own
// credentials and no more: every uid (real, effective, saved, filesystem) that uid, every gid and
// supplementary group one the uid has on this host (/etc/passwd, /etc/group), no capability; and
// nothing the restore would do for them with its own privileges that the uid could not do: a port
// below the unprivileged ones, a TCP connection made through TCP_REPAIR, another uid's SysV shared
// memory, real-time scheduling or a negative nice, a negative OOM adjustment, another audit login
// uid. The agent decides from the image it verified, before anything is spawned; whatever the
// restore then opens or binds by path, it does with that uid's file credentials
// (RestoreOptions.asUser).
import { readFileSync } from 'node:fs';
import { FerryError } from '../errors.js';
import type { Manifest } from '../state/image.js';
import { privilegedSockopt } from '../state/sockopts.js';
import { NO_LOGINUID } from '../state/task.js';
import { SCHED } from '../sys/sched.js';
import type { Caller } from './auth.js';

export interface HostUser {
  uid: number;
  /** Its primary group, and every group that lists it. */
  gids: number[];
}

function readLines(path: string): string[][] {
  try {
    return readFileSync(path, 'utf8')
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('#'))
      .map((l) => l.split(':'));
  } catch {
    return [];
  }
}

/** The groups user `uid` has on this host: its primary group and the groups that name it. */
export function hostUser(uid: number, files = { passwd: '/etc/passwd', group: '/etc/group' }): HostUser {
  const entry = readLines(files.passwd).find((f) => Number(f[2]) === uid);
  const gids = new Set<number>();
  if (entry) {
    gids.add(Number(entry[3]));
    for (const g of readLines(files.group))
      if ((g[3] ?? '').split(',').includes(entry[0]!)) gids.add(Number(g[2]));
  }
  return { uid, gids: [...gids] };
}

/**
 * Refuse (FERRY_AUTH) an image whose processes would run with more than `caller`'s uid has: any
 * id not its own, a group it is not in, any capability. A caller not bound to a uid may restore
 * anything; so may one bound to uid 0.
 */
export function checkLeastPrivilege(caller: Caller, manifest: Manifest, user = hostUser): void {
  const uid = caller.uid;
  if (uid === undefined || uid === 0) return;
  const allowed = new Set(user(uid).gids);
  const lowestPort = unprivilegedPortStart();
  for (const state of [manifest.state, ...manifest.children]) {
    const refuse = (what: string): never => {
      throw new FerryError(
        'FERRY_AUTH',
        `this token acts for uid ${uid}, and process ${state.pid} of the image would ${what}`,
      );
    };
    // The process's credentials, and those of any thread that has its own.
    for (const { uids, gids, groups, caps } of [
      state.creds,
      ...state.threads.flatMap((t) => t.creds ?? []),
    ]) {
      const otherUid = uids.find((u) => u !== uid);
      if (otherUid !== undefined) refuse(`run with uid ${otherUid}`);
      const otherGid = [...gids, ...groups].find((g) => !allowed.has(g));
      if (otherGid !== undefined) refuse(`run with group ${otherGid}, which uid ${uid} is not in here`);
      const held = Object.entries(caps).find(([set, v]) => set !== 'bounding' && v !== 0n);
      if (held) refuse(`run with capabilities (${held[0]} 0x${held[1].toString(16)})`);
    }
    for (const f of state.files) {
      if (f.kind === 'pty' && f.uid !== uid) refuse(`own /dev/pts/${f.index} as uid ${f.uid} (fd ${f.fd})`);
      if (f.kind === 'fanotify') refuse(`have a fanotify instance (fd ${f.fd}), which needs CAP_SYS_ADMIN`);
      if (f.kind === 'packet') refuse(`have a packet socket (fd ${f.fd}), which needs CAP_NET_RAW`);
      if (f.kind !== 'socket' && f.kind !== 'unix') continue;
      const option = privilegedSockopt(f.options);
      if (option) refuse(`set ${option} on fd ${f.fd}, which needs CAP_NET_ADMIN or CAP_NET_RAW`);
      if (f.kind !== 'socket') continue;
      if (f.tcp)
        refuse(`have a TCP connection (fd ${f.fd}), which only TCP_REPAIR remakes: that needs CAP_NET_ADMIN`);
      const port = f.address.readUInt16BE(2);
      if (port !== 0 && port < lowestPort)
        refuse(`bind port ${port} (fd ${f.fd}): below ${lowestPort}, the lowest a user may bind here`);
    }
    const shm = state.shm.find((seg) => seg.uid !== uid);
    if (shm) refuse(`attach SysV shared memory ${shm.id}, which uid ${shm.uid} owns`);
    for (const t of state.threads) {
      if (!t.sched) continue;
      if (t.sched.policy === SCHED.FIFO || t.sched.policy === SCHED.RR || t.sched.policy === SCHED.DEADLINE)
        refuse(`run thread ${t.tid} under real-time or deadline scheduling (policy ${t.sched.policy})`);
      if (t.sched.nice < 0) refuse(`run thread ${t.tid} at nice ${t.sched.nice}`);
    }
    if (state.task && state.task.oomScoreAdj < 0)
      refuse(`have an OOM score adjustment of ${state.task.oomScoreAdj}, below 0`);
    if (state.task && state.task.loginuid !== uid && state.task.loginuid !== NO_LOGINUID)
      refuse(`have the audit login uid ${state.task.loginuid}`);
  }
}

/** The lowest port a process without CAP_NET_BIND_SERVICE may bind here. */
function unprivilegedPortStart(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'latin1').trim());
  } catch {
    return 1024;
  }
}
