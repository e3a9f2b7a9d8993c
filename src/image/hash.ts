// Checksums of image parts: XXH3-64, native (about 18 GB/s here, four times the WebAssembly
// xxHash64 that images of format 3 and older carry, which are still checked by theirs). Page
// hashes for dirty tracking stay in WebAssembly: one native call per 4 KiB page costs more than
// the hash.
import { FerryError } from '../errors.js';
import { nativeXxhash, xxhashWasm } from '../sys/packages.js';

type XxhashApi = Awaited<ReturnType<ReturnType<typeof xxhashWasm>>>;

let api: XxhashApi | undefined;

/** Load the page hasher (on first use: most commands hash no pages); call before pageHash(). */
export async function initHashing(): Promise<void> {
  api ??= await xxhashWasm()();
}

export interface Hasher {
  update(data: Uint8Array): void;
  /** The algorithm's name, `:` and 16 hex digits: `xxh3:0123456789abcdef`. */
  digest(): string;
}

/** The algorithms a checksum may name: what ferry writes now, and what older images have. */
const ALGORITHMS = {
  xxh3: () => nativeXxhash().xxh3.Xxh3.withSeed(),
  xxh64: () => new (nativeXxhash().Xxh64)(),
} as const;
type Algorithm = keyof typeof ALGORITHMS;

/** Checksums as the image's manifest writes them. */
export const CHECKSUM = /^(?:xxh3|xxh64):[0-9a-f]{16}$/;

/** A hasher of the algorithm ferry writes, or of the one `like` (a checksum) names. */
export function createHasher(like?: string): Hasher {
  const algorithm: Algorithm = like?.startsWith('xxh64:') ? 'xxh64' : 'xxh3';
  const state = ALGORITHMS[algorithm]();
  return {
    update(data) {
      state.update(data);
    },
    digest: () => `${algorithm}:${state.digest().toString(16).padStart(16, '0')}`,
  };
}

export function hashBytes(data: Uint8Array, like?: string): string {
  const h = createHasher(like);
  h.update(data);
  return h.digest();
}

/** The xxHash64 of one page (dirty tracking by page hashes). */
export function pageHash(page: Uint8Array): bigint {
  if (!api) throw new FerryError('FERRY_INTERNAL', 'initHashing() was not called');
  return api.h64Raw(page);
}
