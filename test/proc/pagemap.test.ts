import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodePagemapEntry, PM } from '../../src/proc/pagemap.js';

test('decodes a present anonymous exclusive page', () => {
  const e = decodePagemapEntry(PM.PRESENT | PM.EXCLUSIVE | PM.SOFT_DIRTY | 0x1234n);
  assert.deepEqual(e, {
    present: true,
    swapped: false,
    file: false,
    exclusive: true,
    softDirty: true,
    uffdWp: false,
    pfn: 0x1234n,
    swapType: 0,
    swapOffset: 0n,
  });
});

test('decodes a swapped page: type in bits 0-4, offset above', () => {
  const e = decodePagemapEntry(PM.SWAPPED | PM.UFFD_WP | (0x99n << 5n) | 3n);
  assert.equal(e.present, false);
  assert.equal(e.swapped, true);
  assert.equal(e.uffdWp, true);
  assert.equal(e.pfn, 0n);
  assert.equal(e.swapType, 3);
  assert.equal(e.swapOffset, 0x99n);
});

test('decodes a file page and an empty entry', () => {
  assert.equal(decodePagemapEntry(PM.PRESENT | PM.FILE).file, true);
  const none = decodePagemapEntry(0n);
  assert.equal(none.present || none.swapped || none.file, false);
});
