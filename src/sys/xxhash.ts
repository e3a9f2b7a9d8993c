// XXH3-64 through the system's libxxhash (Debian's libxxhash0, which apt itself depends on), where
// it can be opened: one call hashes a stretch of memory, on the main thread or on one of libuv's
// threads, so that several stretches are hashed at once. Where it cannot be opened, callers hash
// with @node-rs/xxhash on the main thread: the digests are the same.
import type { KoffiFunc } from 'koffi';
import { addressOf } from './libc.js';
import { koffi } from './packages.js';

type Xxh3 = KoffiFunc<(data: bigint, length: number) => number | bigint>;

/** libxxhash's XXH3-64 functions, once looked for: null when libxxhash is not there. */
let xxh3: { plain: Xxh3; wide: Xxh3 } | null | undefined;

/**
 * XXH3_64bits (SSE2), and XXH3_64bits_dispatch where the library has it (Debian's x86_64 build):
 * the widest vectors the CPU has, AVX-512 here, 7 times as fast from the cache, a fifth faster
 * from the page cache on 2 CPUs. It leaves the upper halves of the vector registers dirty, which
 * makes later SSE code of the same thread twice as slow: only libuv's threads call it, which run
 * little but system calls.
 */
function systemXxh3(): { plain: Xxh3; wide: Xxh3 } | null {
  if (xxh3 === undefined) {
    try {
      const lib = koffi().load('libxxhash.so.0');
      const plain = lib.func('uint64_t XXH3_64bits(uintptr_t, size_t)') as Xxh3;
      let wide = plain;
      try {
        wide = lib.func('uint64_t XXH3_64bits_dispatch(uintptr_t, size_t)') as Xxh3;
      } catch {
        // A build without the dispatcher: SSE2 everywhere.
      }
      xxh3 = { plain, wide };
    } catch {
      xxh3 = null;
    }
  }
  return xxh3;
}

/** Whether the system's libxxhash can be called (xxh3Of... below return undefined otherwise). */
export function hasSystemXxh3(): boolean {
  return systemXxh3() !== null;
}

/** XXH3-64 (seed 0) of `data` by libxxhash, or undefined without it. */
export function xxh3OfBytes(data: ArrayBufferView): bigint | undefined {
  const fn = systemXxh3()?.plain;
  return fn ? BigInt(fn(addressOf(data), data.byteLength)) : undefined;
}

/**
 * XXH3-64 (seed 0) of `length` bytes of this process's memory at `addr` (such as a mapped file),
 * by libxxhash on one of libuv's threads: several run at once. The memory must stay mapped until
 * it settles.
 */
export function xxh3OfMemory(addr: bigint, length: number): Promise<bigint> {
  const fn = systemXxh3()?.wide;
  if (!fn) return Promise.reject(new Error('libxxhash.so.0 is not available'));
  return new Promise((resolve, reject) =>
    fn.async(addr, length, (err: unknown, digest: number | bigint) => {
      if (err) reject(err instanceof Error ? err : new Error('XXH3_64bits failed', { cause: err }));
      else resolve(BigInt(digest));
    }),
  );
}
