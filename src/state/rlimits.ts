// Resource limits. Read from /proc/PID/limits (prlimit on another user's process needs
// CAP_SYS_RESOURCE) and set from inside the restored process, which may lower a hard limit but
// never raise one above the stub's without CAP_SYS_RESOURCE, nor ever for a restore made for a user
// (RestoreContext.user), who would not have that capability.
import { array, hex64, integer, object, type Infer } from '../image/schema.js';
import { readProcText } from '../proc/files.js';
import { parseLimits, RLIMIT_NAMES } from '../proc/limits.js';
import { parseStatus } from '../proc/status.js';
import { NR } from '../sys/nr.js';
import type { RemoteCall } from '../tracee/remote.js';
import type { DumpContext, RestoreContext } from './context.js';

export const rlimitsRecord = array(object({ resource: integer(0, 15), soft: hex64, hard: hex64 }), {
  max: RLIMIT_NAMES.length,
});
export type RlimitsRecord = Infer<typeof rlimitsRecord>;

const CAP_SYS_RESOURCE = 24n;

export function dumpRlimits(ctx: DumpContext): RlimitsRecord {
  return parseLimits(readProcText(ctx.pid, 'limits'), `/proc/${ctx.pid}/limits`);
}

export function restoreRlimits(ctx: RestoreContext, rec: RlimitsRecord): void {
  const current = parseLimits(readProcText(ctx.pid, 'limits'));
  const canRaise =
    !ctx.user &&
    ((parseStatus(readProcText(ctx.pid, 'status')).capEffective >> CAP_SYS_RESOURCE) & 1n) === 1n;
  const calls: RemoteCall[] = rec.map((limit) => {
    let { soft, hard } = limit;
    const now = current.find((c) => c.resource === limit.resource);
    if (now && hard > now.hard && !canRaise) {
      ctx.warn(
        `${RLIMIT_NAMES[limit.resource]}: hard limit stays ${now.hard} (raising it needs CAP_SYS_RESOURCE${ctx.user ? `, which uid ${ctx.user.fsuid} does not have` : ''})`,
      );
      hard = now.hard;
      soft = soft < hard ? soft : hard;
    }
    const value = Buffer.alloc(16);
    value.writeBigUInt64LE(soft, 0);
    value.writeBigUInt64LE(hard, 8);
    return {
      name: `prlimit64(${limit.resource})`,
      nr: NR.prlimit64,
      args: [0, limit.resource, ctx.remote.put(value), 0],
    };
  });
  ctx.remote.batch(calls);
}
