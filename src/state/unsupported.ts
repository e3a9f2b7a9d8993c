// State ferry cannot save yet is refused at dump time, by name, so a dump never succeeds into a
// restore that would lose it: seccomp (refused before ferry runs anything inside the process).
// Each refusal here goes when the state module that saves it arrives.
import { FerryError } from '../errors.js';
import { readProcText } from '../proc/files.js';
import { parseStatus } from '../proc/status.js';
import { unsupportedMessage } from './context.js';

function refuse(pid: number, what: string, why: string): never {
  throw new FerryError('FERRY_UNSUPPORTED_STATE', unsupportedMessage(pid, what, why));
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
