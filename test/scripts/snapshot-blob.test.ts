import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { test } from 'node:test';
import { findCodeCache, withoutCodeCache } from '../../scripts/snapshot-blob.js';
import { CLI } from '../helpers/paths.js';

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

/** A code cache as Node writes it: count, then each module's id and cache bytes. */
function codeCache(entries: [string, number][]): Buffer {
  return Buffer.concat([
    u64(entries.length),
    ...entries.flatMap(([id, size]) => [u64(id.length), Buffer.from(id), u64(size), Buffer.alloc(size, id)]),
  ]);
}

// What comes before the cache in a blob: V8's heap and Node's tables, zeros and small numbers
// among them, even a string table that looks like ids.
const HEAD = Buffer.concat([
  Buffer.from([0x19, 0xda, 0x43, 0x01]),
  u64(3),
  u64(4),
  Buffer.from('fs\0\0'),
  u64(0),
  Buffer.alloc(37, 7),
  u64(2),
  u64(6),
  Buffer.from('buffer'),
  u64(2),
  Buffer.from('fs'),
]);

const BLOB = Buffer.concat([
  HEAD,
  codeCache([
    ['fs', 40],
    ['repl', 3],
    ['internal/errors', 9],
  ]),
]);

test('the code cache is found where the rest of the blob reads as one, to its last byte', () => {
  const cache = findCodeCache(BLOB);
  assert.ok(cache);
  assert.equal(cache.start, HEAD.length);
  assert.deepEqual(
    cache.entries.map((e) => e.id),
    ['fs', 'repl', 'internal/errors'],
  );
  // One byte more, or one less, and nothing reads as a code cache.
  assert.equal(findCodeCache(Buffer.concat([BLOB, Buffer.from([0])])), undefined);
  assert.equal(findCodeCache(BLOB.subarray(0, BLOB.length - 1)), undefined);
  assert.equal(
    withoutCodeCache(HEAD, () => true),
    undefined,
  );
});

test('trimming drops the entries named and keeps the rest and the head byte for byte', () => {
  const loaded = new Set(['fs', 'internal/errors', 'path']);
  const trimmed = withoutCodeCache(BLOB, (id) => loaded.has(id));
  assert.ok(trimmed);
  assert.deepEqual(trimmed, Buffer.concat([HEAD, codeCache([['repl', 3]])]));
  assert.deepEqual(
    withoutCodeCache(BLOB, () => true),
    Buffer.concat([HEAD, codeCache([])]),
  );
});

test('the built snapshots hold no code cache for the builtins they hold loaded; restore’s none', () => {
  // Restore's ends with a count of no entries (which findCodeCache() does not take for a cache).
  assert.deepEqual(readFileSync(`${dirname(CLI)}/ferry-restore.blob`).subarray(-8), u64(0));
  for (const name of ['ferry', 'ferry-dump']) {
    const cache = findCodeCache(readFileSync(`${dirname(CLI)}/${name}.blob`));
    assert.ok(cache, `${name}.blob ends with a code cache`);
    const ids = new Set(cache.entries.map((e) => e.id));
    // Every command loads these before its snapshot is taken; none loads the REPL.
    for (const loaded of ['fs', 'internal/errors', 'internal/util/inspect'])
      assert.ok(!ids.has(loaded), `${name}.blob: no cache for ${loaded}`);
    assert.ok(ids.has('repl'), `${name}.blob keeps the cache of a builtin it has not loaded`);
  }
});
