import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import { AT, parseAuxv } from '../../src/proc/auxv.js';
import { dataBytes } from '../helpers/data.js';

test('parses captured auxv up to AT_NULL', () => {
  const entries = parseAuxv(dataBytes('auxv.bin'));
  const byType = new Map(entries.map((e) => [e.type, e]));
  assert.equal(byType.get(AT.PAGESZ)!.value, 4096n);
  assert.equal(byType.get(AT.PAGESZ)!.name, 'AT_PAGESZ');
  assert.ok(byType.get(AT.SYSINFO_EHDR)!.value > 0n);
  assert.ok(byType.get(AT.ENTRY)!.value > 0n);
  assert.ok(!entries.some((e) => e.type === AT.NULL));
});

test('refuses auxv that is cut short or has no AT_NULL', () => {
  const good = dataBytes('auxv.bin');
  for (const bytes of [good.subarray(0, 20), good.subarray(0, 32)]) {
    assert.throws(
      () => parseAuxv(bytes),
      (err: unknown) => isFerryError(err, 'FERRY_PARSE'),
    );
  }
});
