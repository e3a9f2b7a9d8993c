// Checksums of image parts: XXH3-64, native (about 18 GB/s here, four times the WebAssembly
// xxHash64 that images of format 3 and older carry, which are still checked by theirs), of each
// 4 MiB of a part, then of those digests: a reader hashes the chunks on every CPU at once. Page
// hashes for dirty tracking stay in WebAssembly: one native call per 4 KiB page costs more than
// the hash.
import { FerryError } from '../errors.js';
import { nativeXxhash, xxhashWasm } from '../sys/packages.js';
import { xxh3OfBytes } from '../sys/xxhash.js';

type XxhashApi = Awaited<ReturnType<ReturnType<typeof xxhashWasm>>>;

let api: XxhashApi | undefined;

/** Load the page hasher (on first use: most commands hash no pages); call before pageHash(). */
export async function initHashing(): Promise<void> {
  api ??= await xxhashWasm()();
}

export interface Hasher {
  update(data: Uint8Array): void;
  /** The algorithm's name, `:` and 16 hex digits: `xxh3t:0123456789abcdef`. */
  digest(): string;
}

/** Bytes of a part hashed apart in a tree checksum (`xxh3t`), each on its own. */
export const TREE_CHUNK = 4 << 20;

/** XXH3-64 (seed 0) of `data`: by the system's libxxhash where there is one (no package to load). */
export function xxh3(data: Uint8Array): bigint {
  return xxh3OfBytes(data) ?? nativeXxhash().xxh3.xxh64(data);
}

/**
 * XXH3-64 of each TREE_CHUNK bytes, streamed; the digest is XXH3-64 of those digests, 8 bytes each
 * little-endian (one digest, of nothing, for no bytes). Chunks can be hashed apart, at once.
 */
class TreeState {
  private chunk = nativeXxhash().xxh3.Xxh3.withSeed();
  private filled = 0;
  private readonly digests: bigint[] = [];

  update(data: Uint8Array): void {
    for (let at = 0; at < data.length;) {
      const n = Math.min(TREE_CHUNK - this.filled, data.length - at);
      this.chunk.update(data.subarray(at, at + n));
      this.filled += n;
      at += n;
      if (this.filled === TREE_CHUNK) this.endChunk();
    }
  }

  digest(): bigint {
    if (this.filled > 0 || this.digests.length === 0) this.endChunk();
    return treeRoot(this.digests);
  }

  private endChunk(): void {
    this.digests.push(this.chunk.digest());
    this.chunk = nativeXxhash().xxh3.Xxh3.withSeed();
    this.filled = 0;
  }
}

/** The root of a tree checksum from its chunks' digests, in order. */
export function treeRoot(digests: readonly bigint[]): bigint {
  const bytes = Buffer.alloc(digests.length * 8);
  digests.forEach((d, i) => bytes.writeBigUInt64LE(d, i * 8));
  return xxh3(bytes);
}

/**
 * The algorithms a checksum may name: `xxh3t` for parts and `xxh3` for the manifest itself (what
 * ferry writes now), `xxh3` for parts of version-4 images and `xxh64` for older ones.
 */
const ALGORITHMS = {
  xxh3t: () => new TreeState(),
  xxh3: () => nativeXxhash().xxh3.Xxh3.withSeed(),
  xxh64: () => new (nativeXxhash().Xxh64)(),
} as const;
export type Algorithm = keyof typeof ALGORITHMS;

/** Checksums as the image's manifest writes them. */
export const CHECKSUM = /^(?:xxh3t|xxh3|xxh64):[0-9a-f]{16}$/;

/** The algorithm checksum `sum` names, if it is one of these. */
export function algorithmOf(sum: string): Algorithm | undefined {
  const name = sum.slice(0, sum.indexOf(':'));
  return Object.hasOwn(ALGORITHMS, name) ? (name as Algorithm) : undefined;
}

/** A checksum as written: the algorithm's name and the digest in 16 hex digits. */
export function formatChecksum(algorithm: Algorithm, digest: bigint): string {
  return `${algorithm}:${digest.toString(16).padStart(16, '0')}`;
}

/** A hasher of a part's bytes: by the algorithm ferry writes, or by `algorithm`. */
export function createHasher(algorithm: Algorithm = 'xxh3t'): Hasher {
  const state = ALGORITHMS[algorithm]();
  return {
    update(data) {
      state.update(data);
    },
    digest: () => formatChecksum(algorithm, state.digest()),
  };
}

/** The checksum of `data` by `algorithm` (the manifest's own: XXH3-64 of all of it). */
export function hashBytes(data: Uint8Array, algorithm: Algorithm = 'xxh3'): string {
  if (algorithm === 'xxh3') return formatChecksum('xxh3', xxh3(data));
  const h = createHasher(algorithm);
  h.update(data);
  return h.digest();
}

/** The xxHash64 of one page (dirty tracking by page hashes). */
export function pageHash(page: Uint8Array): bigint {
  if (!api) throw new FerryError('FERRY_INTERNAL', 'initHashing() was not called');
  return api.h64Raw(page);
}
