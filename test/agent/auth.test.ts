// Agent tokens: the file format, bearer headers, and uid-bound tokens.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { authenticate, authorize, parseTokenFile } from '../../src/agent/auth.js';

const FILE = '# operators\nadmin-token-0123456789\n\nalice-token-0123456789 uid=1000\n';

test('tokens authenticate callers; a uid-bound token acts only on that uid', () => {
  const tokens = parseTokenFile(FILE, 'tokens');
  assert.deepEqual(authenticate(tokens, 'Bearer admin-token-0123456789'), { uid: undefined });
  const alice = authenticate(tokens, 'bearer alice-token-0123456789');
  assert.ok(alice);
  assert.deepEqual(alice, { uid: 1000 });
  for (const header of [
    undefined,
    '',
    'Bearer',
    'Basic YWxpY2U=',
    'Bearer admin-token-012345678',
    'Bearer x',
  ])
    assert.equal(authenticate(tokens, header), undefined, String(header));
  authorize(alice, 1000, 'process 1');
  assert.throws(() => authorize(alice, 0, 'process 1'), { code: 'FERRY_AUTH' });
  authorize({ uid: undefined }, 0, 'process 1');
});

test('a bad token file is refused with its line', () => {
  assert.throws(() => parseTokenFile('short\n', 't'), /t:1: a token needs at least 16/);
  assert.throws(() => parseTokenFile('# only comments\n', 't'), /holds no token/);
  assert.throws(() => parseTokenFile('admin-token-0123456789 gid=5\n', 't'), /t:1: unknown field "gid=5"/);
});
