import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import { parseMaps } from '../../src/proc/maps.js';
import { parseSmaps } from '../../src/proc/smaps.js';
import { dataText } from '../helpers/data.js';

test('parses captured smaps: headers, kB fields as bytes, VmFlags', () => {
  const entries = parseSmaps(dataText('smaps.txt'));
  assert.ok(entries.length > 10);
  const heap = entries.find((e) => e.name === '[heap]');
  const stack = entries.find((e) => e.name === '[stack]')!;
  assert.ok(heap === undefined || heap.vmFlags.includes('wr'));
  assert.ok(stack.vmFlags.includes('gd'), 'the stack grows down');
  assert.equal(stack.fields.Size, Number(stack.end - stack.start));
  for (const e of entries) {
    assert.ok(e.vmFlags.length > 0, `VmFlags for ${e.name}`);
    assert.equal(e.fields.Size, Number(e.end - e.start));
    assert.ok(e.fields.Rss! % 4096 === 0);
  }
});

test('smaps headers are the maps lines', () => {
  const header = (text: string): string =>
    text
      .split('\n')
      .filter((l) => /^[0-9a-f]+-/.test(l))
      .join('\n');
  const fromSmaps = parseSmaps(dataText('smaps.txt')).map(({ fields: _f, vmFlags: _v, ...rest }) => rest);
  assert.deepEqual(fromSmaps, parseMaps(header(dataText('smaps.txt'))));
});

test('refuses malformed smaps', () => {
  const cases = [
    'Rss: 4 kB',
    '7f00-7f10 rw-p 00000000 00:00 0\nRss 4 kB',
    '7f00-7f10 rw-p 00000000 00:00 0\nVmFlags: rdd',
  ];
  for (const text of cases) {
    assert.throws(
      () => parseSmaps(text),
      (err: unknown) => isFerryError(err, 'FERRY_PARSE'),
    );
  }
});
