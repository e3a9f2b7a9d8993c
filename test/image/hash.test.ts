import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createHasher, hashBytes, TREE_CHUNK, treeRoot, xxh3, type Algorithm } from '../../src/image/hash.js';
import { fileChecksum } from '../../src/read-image.js';
import { nativeXxhash } from '../../src/sys/packages.js';
import { hasSystemXxh3, xxh3OfBytes } from '../../src/sys/xxhash.js';

const abc = Buffer.from('abc');

/** 9 MiB and a bit of bytes no two chunks of which are alike. */
function sample(): Buffer {
  const data = Buffer.alloc((9 << 20) + 12345);
  for (let i = 0; i + 4 <= data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
  return data;
}

test('the manifest is hashed with XXH3-64; older images with the xxHash64 they name', () => {
  // The reference vectors of XXH3_64bits("abc") and XXH64("abc"), seed 0.
  assert.equal(hashBytes(abc), 'xxh3:78af5f94892f3950');
  assert.equal(hashBytes(abc, 'xxh64'), 'xxh64:44bc2cf5ad770999');
  assert.equal(hashBytes(Buffer.alloc(0)), 'xxh3:2d06800538d394c2');
});

test('parts are hashed as a tree: XXH3-64 of the XXH3-64s of each 4 MiB', () => {
  const data = sample();
  const chunks = [0, 1, 2].map((i) =>
    nativeXxhash().xxh3.xxh64(data.subarray(i * TREE_CHUNK, (i + 1) * TREE_CHUNK)),
  );
  const root = Buffer.alloc(24);
  chunks.forEach((d, i) => root.writeBigUInt64LE(d, i * 8));
  const expected = `xxh3t:${nativeXxhash().xxh3.xxh64(root).toString(16).padStart(16, '0')}`;
  assert.equal(hashBytes(data, 'xxh3t'), expected);
  assert.equal(treeRoot(chunks), BigInt(`0x${expected.slice(6)}`));
  // Nothing is one chunk of nothing; a whole number of chunks has no empty one after them.
  assert.equal(
    hashBytes(Buffer.alloc(0), 'xxh3t'),
    `xxh3t:${treeRoot([xxh3(Buffer.alloc(0))])
      .toString(16)
      .padStart(16, '0')}`,
  );
  const two = data.subarray(0, 2 * TREE_CHUNK);
  assert.equal(
    hashBytes(two, 'xxh3t'),
    `xxh3t:${treeRoot(chunks.slice(0, 2)).toString(16).padStart(16, '0')}`,
  );
});

test('a hash fed in pieces equals the hash of the whole', () => {
  const data = sample();
  for (const algorithm of ['xxh3t', 'xxh3', 'xxh64'] satisfies Algorithm[]) {
    const h = createHasher(algorithm);
    for (let off = 0; off < data.length; off += 1_000_003) h.update(data.subarray(off, off + 1_000_003));
    assert.equal(h.digest(), hashBytes(data, algorithm));
  }
});

test(
  "the system's libxxhash gives the package's digests",
  { skip: !hasSystemXxh3() && 'no libxxhash.so.0' },
  () => {
    const data = sample();
    assert.equal(xxh3OfBytes(data), nativeXxhash().xxh3.xxh64(data));
    assert.equal(xxh3OfBytes(abc), 0x78af5f94892f3950n);
  },
);

for (const parallel of [true, false]) {
  test(
    `a file's tree checksum, ${parallel ? 'chunks hashed at once by libxxhash' : 'streamed'}: a flipped bit in any chunk shows`,
    { skip: parallel && !hasSystemXxh3() && 'no libxxhash.so.0' },
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'ferry-hash-'));
      const path = join(dir, 'pages.img');
      try {
        const data = sample();
        const sum = async (): Promise<string> => {
          writeFileSync(path, data);
          const fd = openSync(path, 'r');
          try {
            return await fileChecksum(fd, path, data.length, 'xxh3t', parallel);
          } finally {
            closeSync(fd);
          }
        };
        assert.equal(await sum(), hashBytes(data, 'xxh3t'));
        for (const at of [5, TREE_CHUNK + 7, data.length - 1]) {
          data[at]! ^= 0x10;
          assert.notEqual(await sum(), hashBytes(Buffer.from(sample()), 'xxh3t'), `flipped at ${at}`);
          data[at]! ^= 0x10;
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
}
