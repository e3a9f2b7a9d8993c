import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  intersectSpans,
  spanAt,
  spanBytes,
  subtractSpans,
  unionSpans,
  type Span,
} from '../../src/vma/spans.js';

const s = (...pairs: [number, number][]): Span[] =>
  pairs.map(([a, b]) => ({ start: BigInt(a), end: BigInt(b) }));

test('intersect, subtract and union of sorted spans', () => {
  const a = s([0, 10], [20, 30], [40, 50]);
  const b = s([5, 25], [28, 42], [60, 70]);
  assert.deepEqual(intersectSpans(a, b), s([5, 10], [20, 25], [28, 30], [40, 42]));
  assert.deepEqual(subtractSpans(a, b), s([0, 5], [25, 28], [42, 50]));
  assert.deepEqual(unionSpans(a, b), s([0, 50], [60, 70]));
  assert.equal(spanBytes(a), 30);
  assert.deepEqual(subtractSpans(a, []), a);
  assert.deepEqual(intersectSpans(a, []), []);
  assert.deepEqual(subtractSpans(s([0, 10]), s([0, 10])), []);
});

test('the span holding an address, found by binary search', () => {
  const a = s([0, 10], [20, 30], [40, 50]);
  assert.equal(spanAt(a, 0n), a[0]);
  assert.equal(spanAt(a, 29n), a[1]);
  assert.equal(spanAt(a, 40n), a[2]);
  for (const gap of [10n, 15n, 30n, 39n, 50n, 99n]) assert.equal(spanAt(a, gap), undefined, String(gap));
  assert.equal(spanAt([], 5n), undefined);
});
