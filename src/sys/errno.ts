// errno numbers to names and the typed error every failing system call throws.
import { constants } from 'node:os';
import { FerryError } from '../errors.js';
import { strerror } from './libc.js';

const names = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) if (!names.has(value)) names.set(value, name);

/** The symbolic name of an errno value, e.g. 1 -> 'EPERM'. */
export function errnoName(errno: number): string {
  return names.get(errno) ?? `errno ${errno}`;
}

/** The C library's description of an errno value, starting lower-case: 'operation not permitted'. */
export function errnoMessage(errno: number): string {
  const text = strerror(errno);
  return text.charAt(0).toLowerCase() + text.slice(1);
}

/** A system call failed: `ptrace(SEIZE, 1234): EPERM (operation not permitted)`. */
export class SysError extends FerryError {
  /** The call's name, e.g. 'ptrace'. */
  readonly call: string;
  /** The arguments as they appear in the message. */
  readonly args: readonly string[];
  /** errno's symbolic name, e.g. 'EPERM'; callers match on this. */
  readonly errno: string;
  /** errno's number. */
  readonly errnoNumber: number;

  constructor(call: string, args: readonly string[], errno: number) {
    super('FERRY_SYSCALL', `${call}(${args.join(', ')}): ${errnoName(errno)} (${errnoMessage(errno)})`);
    this.name = 'SysError';
    this.call = call;
    this.args = args;
    this.errno = errnoName(errno);
    this.errnoNumber = errno;
  }
}

/** True when `err` is a failed system call with one of the given errno names. */
export function isErrno(err: unknown, ...names: string[]): err is SysError {
  return err instanceof SysError && names.includes(err.errno);
}
