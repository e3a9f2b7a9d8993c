// State ferry cannot save yet is refused at dump time, by name, so a dump never succeeds into a
// restore that would lose it: seccomp (refused before ferry runs anything inside the process),
// threads whose credentials differ.
// Each refusal here goes when the state module that saves it arrives.
import { FerryError } from '../errors.js';
import { readProcText } from '../proc/files.js';
import { parseStatus, type ProcStatus } from '../proc/status.js';
import { unsupportedMessage, type DumpContext } from './context.js';

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
}

/**
 * Refuse a process under seccomp before any call is run inside it: in strict mode the kernel kills
 * it at the first call that is not read, write, exit or sigreturn, and a filter may kill it too.
 */
export function refuseSeccomp(pid: number): void {
  const mode = parseStatus(readProcText(pid, 'status')).seccomp;
  if (mode !== 0)
    refuse(
      pid,
      `it runs under seccomp (mode ${mode}${mode === 1 ? ', strict' : ', a filter'})`,
      'which ferry cannot restore yet',
    );
}
