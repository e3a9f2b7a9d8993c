// The system call wrapper every src/sys module uses: a failure becomes a SysError that names the
// call and its arguments.
import { SysError } from './errno.js';
import { trySyscall, trySyscallAsync, type SysArg } from './libc.js';
import { NR } from './nr.js';

/**
 * Syscall that throws a SysError naming the call and its arguments on failure.
 * `describe` renders the arguments for the message, e.g. `['SEIZE', '1234']`.
 */
export function syscall(nr: number, name: string, describe: () => string[], ...args: SysArg[]): number {
  return checked(trySyscall(nr, ...args), name, describe);
}

/** The kernel's result, or the SysError its `-errno` stands for. */
function checked(ret: number, name: string, describe: () => string[]): number {
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
  return checked(await trySyscallAsync(nr, ...args), name, describe);
}

/**
 * Have libuv's threads (the asynchronous calls' and files') started: libuv makes them all, then and
 * there, at the first such call, whose result does not matter here. Made while a process is
 * frozen, they would cost frozen time; and the kernel gives a new thread the ID after the last one
 * it gave, so threads of ferry's started just after a process made under a chosen PID would take
 * the IDs its own threads need next.
 */
export function startWorkerThreads(): void {
  void trySyscallAsync(NR.getpid).catch(() => {});
}

/**
 * Asynchronous calls worth running at once: as many as libuv has threads (UV_THREADPOOL_SIZE, 4 by
 * default), not one per CPU. Hashing a mapped file or filling fresh memory waits on the kernel's
 * page faults as much as it computes: on 2 CPUs, 4 calls at once hashed 64 MiB in 3.8 ms where 2
 * took 4.7, and a 64 MiB restore took 90-95 ms where it took 95-103. (koffi refuses more than 256
 * queued, and each holds its own stack and heap while queued.)
 */
export function callWidth(): number {
  const pool = Number(process.env.UV_THREADPOOL_SIZE);
  return Number.isInteger(pool) && pool > 0 ? Math.min(pool, 128) : 4;
}

/**
 * Run `jobs` (each started when called), callWidth() at a time; resolves to their results in
 * order. After a failure no other starts: the running ones are waited for, then the first failure
 * is thrown (whatever they use is theirs until they are over).
 */
export async function runAtOnce<T>(jobs: readonly (() => Promise<T>)[]): Promise<T[]> {
  const results: T[] = [];
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < jobs.length) {
      const i = next++;
      try {
        results[i] = await jobs[i]!();
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const outcomes = await Promise.allSettled(Array.from({ length: callWidth() }, worker));
  for (const o of outcomes) if (o.status === 'rejected') throw o.reason;
  return results;
}
