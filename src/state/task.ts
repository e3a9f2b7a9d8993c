// Attributes of the process as a whole: its OOM score adjustment, audit login uid, whether it is a
// child subreaper, whether transparent huge pages are disabled for it, and its membarrier
// registrations. Per thread (scheduling, timer slack, parent-death signal) see thread.ts.
import { readFileSync, writeFileSync } from 'node:fs';
import { boolean, integer, nullable, object, type Infer } from '../image/schema.js';
import { readProcText } from '../proc/files.js';
import { errnoName } from '../sys/errno.js';
import { AT_FDCWD, O } from '../sys/fcntl.js';
import { NR } from '../sys/nr.js';
import { PR } from '../sys/prctl.js';
import type { RemoteCall } from '../tracee/remote.js';
import type { DumpContext, RestoreContext } from './context.js';

/** No audit login uid: (uid_t)-1. */
export const NO_LOGINUID = 2 ** 32 - 1;
/** membarrier(2) command that returns the process's registrations (Linux 6.3). */
const MEMBARRIER_CMD_GET_REGISTRATIONS = 1 << 9;
/** The registrations it can return, each the command that made it. */
const MEMBARRIER_REGISTER = [1 << 1, 1 << 4, 1 << 6, 1 << 8];

export const taskRecord = nullable(
  object({
    oomScoreAdj: integer(-1000, 1000),
    loginuid: integer(0, NO_LOGINUID),
    childSubreaper: boolean,
    thpDisable: boolean,
    /** The MEMBARRIER_CMD_REGISTER_* commands the process has made. */
    membarrier: integer(0, 2 ** 31 - 1),
  }),
);
export type TaskRecord = Infer<typeof taskRecord>;

export function dumpTask(ctx: DumpContext): TaskRecord {
  const remote = ctx.remote;
  const subreaper = remote.alloc(4);
  const [, thp] = remote.batch([
    {
      name: 'prctl(PR_GET_CHILD_SUBREAPER)',
      nr: NR.prctl,
      args: [PR.GET_CHILD_SUBREAPER, subreaper, 0, 0, 0],
    },
    { name: 'prctl(PR_GET_THP_DISABLE)', nr: NR.prctl, args: [PR.GET_THP_DISABLE, 0, 0, 0, 0] },
  ]);
  const registrations = remote.call(NR.membarrier, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0);
  if (registrations < 0n)
    ctx.warn('this kernel cannot tell membarrier registrations (Linux 6.3 can): any is not restored');
  return {
    oomScoreAdj: Number(readProcText(ctx.pid, 'oom_score_adj').trim()),
    loginuid: Number(readProcText(ctx.pid, 'loginuid').trim()),
    childSubreaper: remote.read(subreaper, 4).readInt32LE(0) !== 0,
    thpDisable: thp === 1n,
    membarrier: registrations < 0n ? 0 : Number(registrations),
  };
}

/**
 * Give the stub the process's attributes, before its credentials (it is root meanwhile). What the
 * kernel refuses is said: an OOM adjustment lower than the stub's needs CAP_SYS_RESOURCE, a login
 * uid CAP_AUDIT_CONTROL and a mutable one.
 */
export function restoreTask(ctx: RestoreContext, rec: TaskRecord): void {
  if (!rec) return;
  const remote = ctx.remote;
  const calls: RemoteCall[] = [];
  if (rec.childSubreaper)
    calls.push({
      name: 'prctl(PR_SET_CHILD_SUBREAPER)',
      nr: NR.prctl,
      args: [PR.SET_CHILD_SUBREAPER, 1, 0, 0, 0],
    });
  if (rec.thpDisable)
    calls.push({ name: 'prctl(PR_SET_THP_DISABLE)', nr: NR.prctl, args: [PR.SET_THP_DISABLE, 1, 0, 0, 0] });
  for (const command of MEMBARRIER_REGISTER)
    if (rec.membarrier & command)
      calls.push({ name: `membarrier(${command})`, nr: NR.membarrier, args: [command, 0, 0] });
  remote.batch(calls);
  const path = `/proc/${ctx.pid}/oom_score_adj`;
  if (Number(readFileSync(path, 'latin1').trim()) !== rec.oomScoreAdj) {
    try {
      writeFileSync(path, String(rec.oomScoreAdj));
    } catch (err) {
      ctx.warn(
        `oom_score_adj stays ${readFileSync(path, 'latin1').trim()}, not ${rec.oomScoreAdj}: ${String(err)}`,
      );
    }
  }
  if (Number(readProcText(ctx.pid, 'loginuid').trim()) !== rec.loginuid) restoreLoginuid(ctx, rec.loginuid);
}

/** A process sets only its own login uid: the stub writes /proc/self/loginuid. */
function restoreLoginuid(ctx: RestoreContext, loginuid: number): void {
  const remote = ctx.remote;
  remote.withData(() => {
    const fd = remote.call(
      NR.openat,
      AT_FDCWD,
      remote.putString('/proc/self/loginuid'),
      O.WRONLY | O.CLOEXEC,
      0,
    );
    let written = -1n;
    if (fd >= 0n) {
      const text = String(loginuid);
      written = remote.call(NR.write, fd, remote.putString(text), text.length);
      remote.call(NR.close, fd);
    }
    if (written < 0n)
      ctx.warn(
        `the audit login uid stays ${readProcText(ctx.pid, 'loginuid').trim()}, not ${loginuid}: ${errnoName(Number(-(fd < 0n ? fd : written)))}`,
      );
  });
}
