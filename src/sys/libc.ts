// The only module that loads libc through koffi: a raw syscall entry point and the few libc functions
// (posix_spawn family) that have no syscall of their own. Everything else in src/sys builds on these.
import type { KoffiFunc } from 'koffi';
import { koffi } from './packages.js';

type Library = ReturnType<ReturnType<typeof koffi>['load']>;
let libcLibrary: Library | undefined;

/** Whether libc is open (a call into it was made). */
export function libcLoaded(): boolean {
  return libcLibrary !== undefined;
}

/** libc, opened on the first call into it. */
function libc(): Library {
  return (libcLibrary ??= koffi().load('libc.so.6'));
}

/**
 * The libc function of C prototype `prototype`, declared on its first call: nothing native is
 * touched while modules load (the CLI's startup snapshot is taken from them).
 */
function declared<T>(prototype: string): () => T {
  let fn: T | undefined;
  return () => (fn ??= libc().func(prototype) as T);
}

/** A syscall argument: a number, a bigint (addresses, 64-bit masks) or a buffer passed by address. */
export type SysArg = number | bigint | ArrayBufferView | null;

type RawSyscall = (...args: (number | bigint)[]) => number;
const rawSyscall = declared<KoffiFunc<RawSyscall>>('long syscall(long, long, long, long, long, long, long)');

/** Kernel address of a buffer's first byte (Node never moves a buffer's backing store). */
export function addressOf(buf: ArrayBufferView): bigint {
  return koffi().address(buf);
}

function toWord(arg: SysArg): number | bigint {
  if (arg === null) return 0;
  if (typeof arg === 'number' || typeof arg === 'bigint') return arg;
  return addressOf(arg);
}

/** Raw syscall: returns the kernel's result, or `-errno` on failure; never throws. */
export function trySyscall(nr: number, ...args: SysArg[]): number {
  const words = args.map(toWord);
  while (words.length < 6) words.push(0);
  const ret = rawSyscall()(nr, ...words);
  return ret === -1 ? -koffi().errno() : ret;
}

/**
 * Raw syscall on one of libuv's threads (koffi's asynchronous calls), so that calls that block or
 * take long run beside the main thread and beside each other. Resolves to the kernel's result, or
 * `-errno`; buffers passed must stay untouched until it settles.
 */
export function trySyscallAsync(nr: number, ...args: SysArg[]): Promise<number> {
  const words = args.map(toWord);
  while (words.length < 6) words.push(0);
  return new Promise((resolve, reject) =>
    rawSyscall().async(nr, ...words, (err: unknown, ret: number) => {
      void args; // the buffers behind the addresses live until the call is over
      if (err) reject(err instanceof Error ? err : new Error('asynchronous syscall failed', { cause: err }));
      else resolve(ret === -1 ? -koffi().errno() : ret);
    }),
  );
}

/** libc functions by C prototype, for the calls (posix_spawn) that are library code, not syscalls. */
export function libcFunction<T extends (...args: never[]) => unknown>(prototype: string): T {
  const fn = declared<T>(prototype);
  return ((...args: Parameters<T>) => fn()(...args)) as T;
}

const strerrorRaw = declared<(errnum: number) => string>('const char *strerror(int errnum)');

/** The C library's description of an errno value. */
export function strerror(errno: number): string {
  return strerrorRaw()(errno);
}

/** errno left by the last libc call. */
export function lastErrno(): number {
  return koffi().errno();
}
