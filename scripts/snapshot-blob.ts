// The builtin code cache at the end of a Node startup snapshot blob, and its trimming.
//
// A blob made by `node --build-snapshot` ends with a code cache for every builtin module of Node
// (src/node_snapshotable.cc, SnapshotData::ToBlob), 2.7 MB of a 5.4 MB blob here:
//   u64 count, then `count` times: u64 length, the module's id; u64 length, its cache.
// Node copies all of it at every start. Yet the cache of a builtin that the snapshot's heap holds
// loaded is never read: a loaded module is not compiled again. Without those entries (1.7 MB),
// `ferry restore` started 5-7 ms sooner here and restored a 64 MiB process 12% sooner in all.
// The other entries stay: a builtin first loaded after the start compiles from them. A command
// that loads no builtin after its start (restore) drops them too: 1.1 MB, 2-4 ms of its start.

/** One builtin's entry: its module id, and where the entry lies in the blob. */
export interface CodeCacheEntry {
  id: string;
  start: number;
  end: number;
}

/** The code cache ending a blob: where it starts (its count) and its entries. */
export interface CodeCache {
  start: number;
  entries: CodeCacheEntry[];
}

/** Bounds no Node comes near: entries (about 330 in Node 20) and the length of a module id. */
const MAX_ENTRIES = 1 << 12;
const MAX_ID = 255;
const MODULE_ID = /^[A-Za-z0-9_][A-Za-z0-9_/\-.:]*$/;

/** A u64 at `at` below 2^53, or undefined past the end. */
function u64(blob: Buffer, at: number): number | undefined {
  if (at + 8 > blob.length) return undefined;
  const high = blob.readUInt32LE(at + 4);
  return high < 1 << 21 ? high * 2 ** 32 + blob.readUInt32LE(at) : undefined;
}

/** The code cache read from `start`, if it reads as one that ends exactly where the blob does. */
function readCodeCache(blob: Buffer, start: number): CodeCache | undefined {
  const count = u64(blob, start);
  if (count === undefined || count === 0 || count > MAX_ENTRIES) return undefined;
  const entries: CodeCacheEntry[] = [];
  let at = start + 8;
  for (let i = 0; i < count; i++) {
    const entry = at;
    const idLength = u64(blob, at);
    if (idLength === undefined || idLength === 0 || idLength > MAX_ID) return undefined;
    const id = blob.toString('latin1', at + 8, Math.min(blob.length, at + 8 + idLength));
    if (id.length !== idLength || !MODULE_ID.test(id)) return undefined;
    at += 8 + idLength;
    const dataLength = u64(blob, at);
    if (dataLength === undefined) return undefined;
    at += 8 + dataLength;
    if (at > blob.length) return undefined;
    entries.push({ id, start: entry, end: at });
  }
  return at === blob.length ? { start, entries } : undefined;
}

/**
 * The code cache that ends `blob`: the first place from which the rest of the blob reads as one,
 * entry after entry, to its last byte. Undefined if there is none (a Node whose blob differs).
 */
export function findCodeCache(blob: Buffer): CodeCache | undefined {
  for (let at = 0; at + 8 <= blob.length; at++) {
    const found = readCodeCache(blob, at);
    if (found) return found;
  }
  return undefined;
}

/**
 * `blob` without the code cache entries of the builtins `drop` names; undefined if no code cache
 * ends it.
 */
export function withoutCodeCache(blob: Buffer, drop: (id: string) => boolean): Buffer | undefined {
  const cache = findCodeCache(blob);
  if (!cache) return undefined;
  const kept = cache.entries.filter((e) => !drop(e.id));
  const count = Buffer.alloc(8);
  count.writeBigUInt64LE(BigInt(kept.length));
  return Buffer.concat([
    blob.subarray(0, cache.start),
    count,
    ...kept.map((e) => blob.subarray(e.start, e.end)),
  ]);
}
