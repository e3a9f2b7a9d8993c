// xxHash64 checksums of image parts, streamed in slices (the WebAssembly hasher is fast on slices of
// a few MiB and slow on one huge buffer).
import xxhash from 'xxhash-wasm';
import { FerryError } from '../errors.js';

type XxhashApi = Awaited<ReturnType<typeof xxhash>>;

let api: XxhashApi | undefined;
const SLICE = 4 << 20;

/** Load the hasher; call once before any other function of this module. */
export async function initHashing(): Promise<void> {
  api ??= await xxhash();
}

function loaded(): XxhashApi {
  if (!api) throw new FerryError('FERRY_INTERNAL', 'initHashing() was not called');
  return api;
}

export interface Hasher {
  update(data: Uint8Array): void;
  /** `xxh64:` and 16 hex digits. */
  digest(): string;
}

export function createHasher(): Hasher {
  const state = loaded().create64();
  return {
    update(data) {
      for (let off = 0; off < data.length; off += SLICE) state.update(data.subarray(off, off + SLICE));
    },
    digest: () => `xxh64:${state.digest().toString(16).padStart(16, '0')}`,
  };
}

export function hashBytes(data: Uint8Array): string {
  const h = createHasher();
  h.update(data);
  return h.digest();
}

/** The xxHash64 of one page (dirty tracking by page hashes). */
export function pageHash(page: Uint8Array): bigint {
  return loaded().h64Raw(page);
}
