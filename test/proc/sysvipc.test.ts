import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import { parseSysvShm } from '../../src/proc/sysvipc.js';
import { dataText } from '../helpers/data.js';

test('SysV segments from captured /proc/sysvipc/shm: octal mode with SHM_DEST, a negative key', () => {
  assert.deepEqual(parseSysvShm(dataText('sysvipc-shm.txt')), [
    { key: 0x1234abcd, id: 0, mode: 0o640, size: 10000, attached: 1, uid: 0, gid: 0 },
    { key: 0, id: 1, mode: 0o1600, size: 5000, attached: 1, uid: 1000, gid: 100 },
    { key: -559038737, id: 32769, mode: 0o600, size: 4096, attached: 0, uid: 0, gid: 0 },
  ]);
  assert.deepEqual(parseSysvShm(dataText('sysvipc-shm.txt').split('\n')[0]!), []);
});

test('a damaged sysvipc line is refused with its number', () => {
  assert.throws(
    () => parseSysvShm('header\n  12 x 600\n'),
    (err: unknown) => isFerryError(err, 'FERRY_PARSE') && /shm line 2/.test(err.message),
  );
});
