// State ferry cannot save yet is refused at dump time, by name, so a dump never succeeds into a
// restore that would lose it: seccomp's strict mode (refused before ferry runs anything inside the
// process; filters are saved: thread.ts).
// Each refusal here goes when the state module that saves it arrives.
import { FerryError } from '../errors.js';
import { readProcText } from '../proc/files.js';
import { parseStatus } from '../proc/status.js';
import { unsupportedMessage } from './context.js';

function refuse(pid: number, what: string, why: string): never {
  throw new FerryError('FERRY_UNSUPPORTED_STATE', unsupportedMessage(pid, what, why));
}

/**
 * Refuse a process under seccomp's strict mode before any call is run inside it: the kernel kills
 * it at the first call that is not read, write, exit or sigreturn. (Filters are suspended while
 * ferry holds the process, PTRACE_O_SUSPEND_SECCOMP, and saved.)
 */
export function refuseSeccomp(pid: number): void {
  if (parseStatus(readProcText(pid, 'status')).seccomp === 1)
    refuse(pid, 'it runs under seccomp (mode 1, strict)', 'which ferry cannot restore yet');
}
