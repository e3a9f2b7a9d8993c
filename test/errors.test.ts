import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ERROR_CODES, FerryError, isFerryError } from '../src/errors.js';
import { REPO } from './helpers/paths.js';

test('docs/errors.md lists exactly the codes in src/errors.ts, with the same meaning', () => {
  const doc = readFileSync(`${REPO}docs/errors.md`, 'utf8');
  const rows = [...doc.matchAll(/^\| `(FERRY_[A-Z_]+)` \| (.+) \|$/gm)].map((m) => [m[1], m[2]]);
  assert.deepEqual(rows, Object.entries(ERROR_CODES));
});

test('FerryError carries its code; isFerryError matches by code', () => {
  const err = new FerryError('FERRY_ZOMBIE', 'z');
  assert.equal(err.code, 'FERRY_ZOMBIE');
  assert.ok(isFerryError(err));
  assert.ok(isFerryError(err, 'FERRY_USAGE', 'FERRY_ZOMBIE'));
  assert.ok(!isFerryError(err, 'FERRY_USAGE'));
  assert.ok(!isFerryError(new Error('x')));
});
