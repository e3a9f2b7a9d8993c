import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { before, test } from 'node:test';
import { createHasher, initHashing } from '../../src/image/hash.js';
import { decodePageIndex } from '../../src/image/page-index.js';
import { PageStoreReader, PageStoreWriter } from '../../src/image/page-store.js';
import type { PartReader, PartWriter } from '../../src/image/sink.js';

before(() => initHashing());

function memoryPart(): PartWriter & { bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const hasher = createHasher();
  return {
    write(data) {
      // Like a file part: hashed at once, the bytes taken later (so a reused buffer would show).
      hasher.update(data);
      const at = chunks.push(Buffer.alloc(0)) - 1;
      return new Promise((resolve) =>
        setTimeout(() => {
          chunks[at] = Buffer.from(data);
          resolve();
        }, 5),
      );
    },
    reserve() {},
    close: () => Promise.resolve({ size: Buffer.concat(chunks).length, checksum: hasher.digest() }),
    bytes: () => Buffer.concat(chunks),
  };
}

function reader(bytes: Buffer): PartReader {
  let at = 0;
  return {
    read(length) {
      const out = bytes.subarray(at, at + length);
      at += out.length;
      return out;
    },
    close() {},
  };
}

for (const compressed of [false, true]) {
  test(`pages go in and come back, zero pages left out (${compressed ? 'zstd' : 'raw'})`, async () => {
    const data = Buffer.concat([
      randomBytes(4096 * 3),
      Buffer.alloc(4096 * 2),
      Buffer.alloc(2 << 20, 7),
      randomBytes(4096),
    ]);
    const pages = memoryPart();
    const index = memoryPart();
    const writer = new PageStoreWriter(pages, index, compressed, 1 << 22);
    // Three batches, so a staging buffer is used again: the first of two ranges (zero pages between
    // data pages move the rest down).
    const batches = [
      [
        { addr: 0x10000n, len: 4 * 4096 },
        { addr: 0x14000n, len: 4096 },
      ],
      [{ addr: 0x15000n, len: 4096 }],
      [{ addr: 0x16000n, len: data.length - 6 * 4096 }],
    ];
    let off = 0;
    for (const ranges of batches) {
      const bytes = ranges.reduce((n, r) => n + r.len, 0);
      data.copy(await writer.room(bytes), 0, off, off + bytes);
      writer.take(ranges);
      off += bytes;
    }
    const summary = await writer.finish();
    assert.equal(summary.zeroPages, 2);
    assert.equal(summary.dataPages, 3 + 512 + 1);
    const decoded = decodePageIndex(index.bytes());
    assert.deepEqual(
      decoded.entries.map((e) => [e.addr, e.pages, e.kind]),
      [
        [0x10000n, 3, 'data'],
        [0x13000n, 2, 'zero'],
        [0x15000n, 513, 'data'],
      ],
    );
    if (compressed) assert.ok(pages.bytes().length < 1 << 20, 'the constant run compresses');
    else assert.equal(pages.bytes().length, summary.dataPages * 4096);
    const back = new PageStoreReader(decoded, reader(pages.bytes()));
    assert.ok(back.read(3 * 4096).equals(data.subarray(0, 3 * 4096)));
    assert.ok(back.read(513 * 4096).equals(data.subarray(5 * 4096)));
  });
}
