import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import type { PageEntry, PageKind } from '../../src/image/page-index.js';
import { resolvePages, type PageLayer } from '../../src/image/page-layers.js';

const P = 4096;
const e = (page: number, pages: number, kind: PageKind): PageEntry => ({
  addr: BigInt(page * P),
  pages,
  kind,
});
const layer = (name: string, ...entries: PageEntry[]): PageLayer => ({
  name,
  index: { compressed: false, frameSize: 0, entries, frames: [] },
  file: name,
  part: name,
  open: () => assert.fail('not read'),
});
const src = (from: number, to: number, layer: number | null, offsetPages: number) => ({
  start: BigInt(from * P),
  end: BigInt(to * P),
  layer,
  offset: offsetPages * P,
});

test('the newest layer says which pages exist; unchanged ones come from the newest older layer holding them', () => {
  const layers = [
    layer('r1', e(0, 10, 'data')), // pages 0-9 at offsets 0-9
    layer('r2', e(2, 2, 'data'), e(6, 1, 'zero')), // 2-3 rewritten, 6 zeroed
    layer('top', e(0, 5, 'earlier'), e(5, 1, 'data'), e(6, 2, 'earlier')), // 8-9 gone
  ];
  assert.deepEqual(resolvePages(layers), [
    src(0, 2, 0, 0),
    src(2, 4, 1, 0),
    src(4, 5, 0, 4),
    src(5, 6, 2, 0),
    src(6, 7, null, 0),
    src(7, 8, 0, 7),
  ]);
});

test('a page marked unchanged that no older layer holds makes the image corrupt', () => {
  const layers = [layer('r1', e(0, 2, 'data')), layer('top', e(0, 3, 'earlier'))];
  assert.throws(
    () => resolvePages(layers),
    (err: unknown) =>
      isFerryError(err, 'FERRY_IMAGE_CORRUPT') && /page 0x2000 is marked unchanged/.test(err.message),
  );
  assert.throws(() => resolvePages([layer('only', e(0, 1, 'earlier'))]), /no earlier layer holds it/);
});
