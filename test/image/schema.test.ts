import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import {
  array,
  base64,
  hex64,
  integer,
  nullable,
  object,
  oneOf,
  string,
  tagged,
} from '../../src/image/schema.js';

const S = object({
  name: string({ max: 8, pattern: /^[a-z]+$/ }),
  count: integer(0, 10),
  addr: hex64,
  items: array(integer(0, 1), { max: 2 }),
  kind: oneOf(['a', 'b'] as const),
  maybe: nullable(base64(4)),
  fd: tagged('kind', { file: object({ fd: integer(0, 9) }), tty: object({}) }),
});

const GOOD = {
  name: 'abc',
  count: 3,
  addr: '0x7f00',
  items: [0, 1],
  kind: 'a',
  maybe: 'AQID',
  fd: { kind: 'file', fd: 3 },
};

test('a good value is checked and typed', () => {
  const v = S.check(GOOD, 'm');
  assert.equal(v.addr, 0x7f00n);
  assert.deepEqual(v.maybe, Buffer.from([1, 2, 3]));
  assert.deepEqual(v.fd, { kind: 'file', fd: 3 });
  assert.equal(S.check({ ...GOOD, maybe: null }, 'm').maybe, null);
});

test('every wrong value is refused, naming where it is and what was expected', () => {
  const cases: [object, RegExp][] = [
    [{ ...GOOD, name: 'ABC' }, /m\.name must be a string matching/],
    [{ ...GOOD, name: 'abcdefghi' }, /m\.name must be/],
    [{ ...GOOD, count: 11 }, /m\.count must be an integer from 0 to 10/],
    [{ ...GOOD, count: 1.5 }, /m\.count must be an integer/],
    [{ ...GOOD, addr: '7f00' }, /m\.addr must be a hex string/],
    [{ ...GOOD, addr: '0x' + 'f'.repeat(17) }, /m\.addr must be a hex string/],
    [{ ...GOOD, items: [0, 1, 0] }, /m\.items must be an array of 0 to 2 items/],
    [{ ...GOOD, items: [2] }, /m\.items\[0\] must be an integer from 0 to 1/],
    [{ ...GOOD, kind: 'c' }, /m\.kind must be one of a, b/],
    [{ ...GOOD, maybe: 'AQIDBAU=' }, /m\.maybe must be base64 of at most 4 bytes/],
    [{ ...GOOD, fd: { kind: 'pipe' } }, /m\.fd\.kind must be one of file, tty/],
    [{ ...GOOD, fd: { kind: 'tty', fd: 1 } }, /m\.fd\.fd must be absent/],
    [{ ...GOOD, extra: 1 }, /m\.extra must be absent \(unknown property\)/],
    [(({ count: _c, ...rest }) => rest)(GOOD), /m\.count must be an integer/],
    [[], /m must be an object/],
  ];
  for (const [value, message] of cases) {
    assert.throws(
      () => S.check(value, 'm'),
      (err: unknown) => isFerryError(err, 'FERRY_IMAGE_INVALID') && message.test(err.message),
      JSON.stringify(value),
    );
  }
});

test('renders as JSON Schema', () => {
  const json = S.json() as {
    required: string[];
    properties: Record<string, { pattern?: string; oneOf?: unknown[] }>;
  };
  assert.deepEqual(json.required, ['name', 'count', 'addr', 'items', 'kind', 'maybe', 'fd']);
  assert.equal(json.properties.addr!.pattern, '^0x[0-9a-f]{1,16}$');
  assert.equal(json.properties.fd!.oneOf!.length, 2);
});
