import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import { decodePageIndex, encodePageIndex, type PageIndex } from '../../src/image/page-index.js';

const INDEX: PageIndex = {
  compressed: true,
  frameSize: 1 << 20,
  entries: [
    { addr: 0x7f0000000000n, pages: 2, kind: 'data' },
    { addr: 0x7f0000002000n, pages: 1, kind: 'zero' },
  ],
  frames: [{ stored: 100, raw: 8192 }],
};

test('encodes to exact bytes and decodes back', () => {
  const bytes = encodePageIndex(INDEX);
  assert.equal(
    bytes.toString('hex'),
    '4645525259504753' + // FERRYPGS
      '01000000' + // version 1
      '01000000' + // zstd frames
      '02000000' + // 2 entries
      '01000000' + // 1 frame
      '00001000' + // frame size 1 MiB
      '00000000' +
      '00000000007f0000' + // 0x7f0000000000
      '02000000' + // 2 pages
      '00000000' + // of data
      '00200000007f0000' + // 0x7f0000002000
      '01000000' + // 1 page
      '01000000' + // all zero
      '64000000' +
      '00200000', // stored 100, raw 8192
  );
  assert.deepEqual(decodePageIndex(bytes), INDEX);
});

test('hostile indexes are refused with a reason, never a crash', () => {
  const good = encodePageIndex(INDEX);
  const patched = (offset: number, write: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(good);
    write(b.subarray(offset));
    return b;
  };
  const cases: [string, Buffer, RegExp][] = [
    ['empty', Buffer.alloc(0), /not a ferry page index/],
    ['bad magic', patched(0, (b) => b.write('XERRYPGS')), /not a ferry page index/],
    ['newer version', patched(8, (b) => b.writeUInt32LE(2)), /version 2; this ferry reads version 1/],
    ['unknown flag', patched(12, (b) => b.writeUInt32LE(3)), /unknown flags 0x3/],
    ['huge count', patched(16, (b) => b.writeUInt32LE(0xffffffff)), /too many entries/],
    ['count and size disagree', patched(16, (b) => b.writeUInt32LE(3)), /size does not match its counts/],
    [
      'unaligned address',
      patched(32, (b) => b.writeBigUInt64LE(0x7f0000000010n)),
      /entry 0 .* out of order or malformed/,
    ],
    ['zero pages', patched(40, (b) => b.writeUInt32LE(0)), /entry 0 .* out of order or malformed/],
    ['unknown kind', patched(44, (b) => b.writeUInt32LE(3)), /entry 0 .* out of order or malformed/],
    [
      'overlapping entries',
      patched(48, (b) => b.writeBigUInt64LE(0x7f0000001000n)),
      /entry 1 .* out of order/,
    ],
    [
      'frame larger than the frame size',
      patched(68, (b) => b.writeUInt32LE(2 << 20)),
      /frame 0 is malformed/,
    ],
    ['frames that do not add up', patched(68, (b) => b.writeUInt32LE(4096)), /frames do not add up/],
    ['truncated', good.subarray(0, good.length - 1), /size does not match/],
  ];
  for (const [what, bytes, message] of cases) {
    assert.throws(
      () => decodePageIndex(bytes),
      (err: unknown) => isFerryError(err, 'FERRY_IMAGE_CORRUPT') && message.test(err.message),
      what,
    );
  }
});
