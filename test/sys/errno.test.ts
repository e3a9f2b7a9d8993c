import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import { errnoName, isErrno, SysError } from '../../src/sys/errno.js';
import { ptraceSeize } from '../../src/sys/ptrace.js';
import { kill } from '../../src/sys/signal.js';

test('a SysError names the call, its arguments and the errno', () => {
  const err = new SysError('ptrace', ['SEIZE', '1234'], 1);
  assert.equal(err.message, 'ptrace(SEIZE, 1234): EPERM (operation not permitted)');
  assert.equal(err.code, 'FERRY_SYSCALL');
  assert.equal(err.errno, 'EPERM');
  assert.equal(err.errnoNumber, 1);
  assert.ok(isFerryError(err, 'FERRY_SYSCALL'));
});

test('errno names', () => {
  assert.deepEqual([1, 2, 3, 13, 17, 22].map(errnoName), [
    'EPERM',
    'ENOENT',
    'ESRCH',
    'EACCES',
    'EEXIST',
    'EINVAL',
  ]);
});

test('real failing calls throw SysErrors callers can match', () => {
  // PID 2^22 + 1 is above any pid_max, so no process can have it.
  const nobody = 4194305;
  assert.throws(
    () => kill(nobody, 0),
    (err: unknown) =>
      isErrno(err, 'ESRCH') && err.message === `kill(${nobody}, signal 0): ESRCH (no such process)`,
  );
  assert.throws(
    () => ptraceSeize(nobody, 0),
    (err: unknown) => isErrno(err, 'ESRCH') && err.call === 'ptrace',
  );
});
