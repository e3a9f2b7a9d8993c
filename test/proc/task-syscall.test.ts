import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import { parseTaskSyscall } from '../../src/proc/task-syscall.js';
import { dataText } from '../helpers/data.js';

test('a thread blocked in clock_nanosleep', () => {
  const s = parseTaskSyscall(dataText('task-syscall-blocked.txt'));
  assert.equal(s.state, 'blocked');
  assert.ok(s.state === 'blocked' && s.nr === 230 && s.sp === 0x7ffefcbe2c98n && s.args.length === 6);
});

test('running, and stopped outside a syscall', () => {
  assert.deepEqual(parseTaskSyscall('running\n'), { state: 'running' });
  assert.deepEqual(parseTaskSyscall('-1 0x7ffd0 0x401000\n'), { state: 'user', sp: 0x7ffd0n, pc: 0x401000n });
});

test('refuses malformed text', () => {
  for (const text of ['', 'walking', '1 0x0', '-1 0x1']) {
    assert.throws(
      () => parseTaskSyscall(text),
      (err: unknown) => isFerryError(err, 'FERRY_PARSE'),
    );
  }
});
