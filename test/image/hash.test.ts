import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createHasher, hashBytes } from '../../src/image/hash.js';

const abc = Buffer.from('abc');

test('parts are hashed with XXH3-64; checksums of older images with the xxHash64 they name', () => {
  // The reference vectors of XXH3_64bits("abc") and XXH64("abc"), seed 0.
  assert.equal(hashBytes(abc), 'xxh3:78af5f94892f3950');
  assert.equal(hashBytes(abc, 'xxh64:0000000000000000'), 'xxh64:44bc2cf5ad770999');
  assert.equal(hashBytes(Buffer.alloc(0)), 'xxh3:2d06800538d394c2');
});

test('a hash fed in pieces equals the hash of the whole', () => {
  const data = Buffer.alloc(9 << 20);
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
  for (const like of [undefined, 'xxh64:0000000000000000']) {
    const h = createHasher(like);
    for (let off = 0; off < data.length; off += 1_000_003) h.update(data.subarray(off, off + 1_000_003));
    assert.equal(h.digest(), hashBytes(data, like));
  }
});
