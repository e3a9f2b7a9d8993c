// The system call wrapper every src/sys module uses: a failure becomes a SysError that names the
// call and its arguments.
import { SysError } from './errno.js';
import { trySyscall, trySyscallAsync, type SysArg } from './libc.js';

/**
 * Syscall that throws a SysError naming the call and its arguments on failure.
 * `describe` renders the arguments for the message, e.g. `['SEIZE', '1234']`.
 */
export function syscall(nr: number, name: string, describe: () => string[], ...args: SysArg[]): number {
  const ret = trySyscall(nr, ...args);
  if (ret < 0 && ret >= -4095) throw new SysError(name, describe(), -ret);
  return ret;
}

/** syscall() on one of libuv's threads (trySyscallAsync()); rejects with the SysError. */
export async function syscallAsync(
  nr: number,
  name: string,
  describe: () => string[],
  ...args: SysArg[]
): Promise<number> {
  const ret = await trySyscallAsync(nr, ...args);
  if (ret < 0 && ret >= -4095) throw new SysError(name, describe(), -ret);
  return ret;
}
