// State ferry cannot save yet is refused at dump time, by name, so a dump never succeeds into a
// restore that would lose it: timers, seccomp, threads whose credentials differ.
// Each refusal here goes when the state module that saves it arrives.
import { FerryError } from '../errors.js';
import { readProcText } from '../proc/files.js';
import { parseStatus, type ProcStatus } from '../proc/status.js';
import { NR } from '../sys/nr.js';
import { unsupportedMessage, type DumpContext } from './context.js';

const ITIMER = ['ITIMER_REAL', 'ITIMER_VIRTUAL', 'ITIMER_PROF'];
const ITIMERVAL = 32;

function refuse(pid: number, what: string, why: string): never {
  throw new FerryError('FERRY_UNSUPPORTED_STATE', unsupportedMessage(pid, what, why));
}

/** Threads normally share their credentials (glibc changes them in every thread at once). */
function sameCreds(a: ProcStatus, b: ProcStatus): boolean {
  return (
    a.uids.join() === b.uids.join() &&
    a.gids.join() === b.gids.join() &&
    a.groups.join() === b.groups.join() &&
    a.capEffective === b.capEffective &&
    a.capPermitted === b.capPermitted &&
    a.capInheritable === b.capInheritable &&
    a.capAmbient === b.capAmbient &&
    a.noNewPrivs === b.noNewPrivs
  );
}

/** Refuse, naming it, state of the frozen process that ferry cannot restore yet. */
export function refuseUnsupported(ctx: DumpContext): void {
  const { pid, status } = ctx;
  for (const tid of ctx.tracee.tids) {
    const thread = tid === pid ? status : parseStatus(readProcText(pid, `task/${tid}/status`));
    if (!sameCreds(thread, status))
      refuse(pid, `its thread ${tid} has credentials of its own`, 'which ferry cannot restore yet');
  }
  if (status.seccomp !== 0)
    refuse(
      pid,
      'it runs under seccomp',
      '(mode ' + String(status.seccomp) + '), which ferry cannot restore yet',
    );
  if (readProcText(pid, 'timers').trim() !== '')
    refuse(pid, 'it has POSIX timers', 'which ferry cannot save yet');
  const out = ctx.remote.alloc(ITIMER.length * ITIMERVAL);
  ctx.remote.batch(
    ITIMER.map((name, i) => ({
      name: `getitimer(${name})`,
      nr: NR.getitimer,
      args: [i, out + BigInt(i * ITIMERVAL)],
    })),
  );
  const timers = ctx.remote.read(out, ITIMER.length * ITIMERVAL);
  ITIMER.forEach((name, i) => {
    if (
      timers.readBigUInt64LE(i * ITIMERVAL + 16) !== 0n ||
      timers.readBigUInt64LE(i * ITIMERVAL + 24) !== 0n
    ) {
      refuse(pid, `it has an armed ${name} interval timer`, 'which ferry cannot save yet');
    }
  });
}
