// Who a descriptor's open file signals (F_SETOWN, F_SETOWN_EX: a thread, a process or a process
// group; for O_ASYNC I/O and urgent data) and with which signal (F_SETSIG). Read in the process with
// fcntl(F_GETOWN_EX) and fcntl(F_GETSIG) for each descriptor, set again by the restored process once
// its descriptors and threads are in place, and then O_ASYNC (which open() ignores) where a
// descriptor had it. An owner that is the process itself, one of its threads or its process group
// is given as they are after the restore.
import { array, integer, object, oneOf, type Infer } from '../image/schema.js';
import { O } from '../sys/fcntl.js';
import { NR } from '../sys/nr.js';
import type { RemoteCall } from '../tracee/remote.js';
import type { DumpContext, RestoreContext } from './context.js';

const F_SETFL = 4;
const F_SETSIG = 10;
/** What F_SETFL sets: O_APPEND, O_ASYNC, O_DIRECT, O_NOATIME, O_NONBLOCK. */
const SETFL_FLAGS = O.APPEND | O.ASYNC | 0o40000 | 0o1000000 | O.NONBLOCK;
const F_GETSIG = 11;
const F_SETOWN_EX = 15;
const F_GETOWN_EX = 16;
const OWNER_TYPES = ['tid', 'pid', 'pgrp'] as const;

const ownerRecord = object({
  fd: integer(0, 1 << 20),
  /** F_OWNER_TID, F_OWNER_PID or F_OWNER_PGRP, and that ID (0: no owner). */
  type: oneOf(OWNER_TYPES),
  pid: integer(0, 2 ** 22),
  /** The signal sent instead of SIGIO, or 0. */
  signal: integer(0, 64),
});
export const ownersRecord = array(ownerRecord, { max: 1 << 20 });
export type OwnersRecord = Infer<typeof ownersRecord>;

/** Descriptors asked at once: each takes an 8-byte struct f_owner_ex of scratch memory. */
const PER_BATCH = 256;

/** The owner and signal of each of `fds` that has either. */
export function dumpOwners(ctx: DumpContext, fds: readonly number[]): OwnersRecord {
  const remote = ctx.remote;
  const out: OwnersRecord = [];
  for (let i = 0; i < fds.length; i += PER_BATCH) {
    const part = fds.slice(i, i + PER_BATCH);
    remote.withData(() => {
      const structs = part.map(() => remote.alloc(8));
      const results = remote.batch(
        part.flatMap((fd, j): RemoteCall[] => [
          { name: `fcntl(${fd}, F_GETOWN_EX)`, nr: NR.fcntl, args: [fd, F_GETOWN_EX, structs[j]!] },
          { name: `fcntl(${fd}, F_GETSIG)`, nr: NR.fcntl, args: [fd, F_GETSIG] },
        ]),
      );
      part.forEach((fd, j) => {
        const owner = remote.read(structs[j]!, 8);
        const pid = owner.readInt32LE(4);
        const signal = Number(results[2 * j + 1]!);
        if (pid === 0 && signal === 0) return;
        out.push({ fd, type: OWNER_TYPES[owner.readInt32LE(0)] ?? 'pid', pid, signal });
      });
    });
  }
  return out;
}

/**
 * Give each descriptor its owner and signal back. `tids` maps the process's thread IDs as dumped to
 * the restored ones; `pgrp` is the process group it had and the one it has now.
 */
export function restoreOwners(
  ctx: RestoreContext,
  owners: OwnersRecord,
  files: readonly { kind: string; fd: number; flags: number }[],
  tids: ReadonlyMap<number, number>,
  pgrp: { was: number; now: number },
): void {
  const remote = ctx.remote;
  remote.withData(() => {
    const calls: RemoteCall[] = [];
    for (const o of owners) {
      if (o.signal !== 0)
        calls.push({
          name: `fcntl(${o.fd}, F_SETSIG, ${o.signal})`,
          nr: NR.fcntl,
          args: [o.fd, F_SETSIG, o.signal],
        });
      if (o.pid === 0) continue;
      const own = o.type === 'pgrp' ? o.pid === pgrp.was : tids.has(o.pid);
      const id = o.type === 'pgrp' ? (own ? pgrp.now : o.pid) : (tids.get(o.pid) ?? o.pid);
      const owner = Buffer.alloc(8);
      owner.writeInt32LE(OWNER_TYPES.indexOf(o.type), 0);
      owner.writeInt32LE(id, 4);
      const call = {
        name: `fcntl(${o.fd}, F_SETOWN_EX, ${o.type} ${id})`,
        nr: NR.fcntl,
        args: [o.fd, F_SETOWN_EX, remote.put(owner)],
      };
      if (own) {
        calls.push(call);
        continue;
      }
      // Another process's: set if it is still there.
      if (remote.call(call.nr, ...call.args) < 0n)
        ctx.warn(
          `fd ${o.fd}: its SIGIO owner, ${o.type === 'pgrp' ? 'process group' : 'process'} ${o.pid}, is gone: not set`,
        );
    }
    // Duplicates and inherited descriptors share their open file's flags.
    for (const f of files)
      if (f.flags & O.ASYNC && f.kind !== 'dup' && f.kind !== 'inherit')
        calls.push({
          name: `fcntl(${f.fd}, F_SETFL, O_ASYNC)`,
          nr: NR.fcntl,
          args: [f.fd, F_SETFL, f.flags & SETFL_FLAGS],
        });
    remote.batch(calls);
  });
}
