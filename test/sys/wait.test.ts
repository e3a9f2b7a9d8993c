import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeWaitStatus } from '../../src/sys/wait.js';

test('decodes exits, deaths by signal, and stops with ptrace events', () => {
  assert.deepEqual(decodeWaitStatus(5, 3 << 8), { pid: 5, kind: 'exited', code: 3 });
  assert.deepEqual(decodeWaitStatus(5, 9), { pid: 5, kind: 'signaled', signal: 9, core: false });
  assert.deepEqual(decodeWaitStatus(5, 0x80 | 11), { pid: 5, kind: 'signaled', signal: 11, core: true });
  assert.deepEqual(decodeWaitStatus(5, (19 << 8) | 0x7f), { pid: 5, kind: 'stopped', signal: 19, event: 0 });
  // PTRACE_EVENT_STOP (128) after PTRACE_INTERRUPT: status>>16 == 128, stop signal SIGTRAP.
  assert.deepEqual(decodeWaitStatus(5, (128 << 16) | (5 << 8) | 0x7f), {
    pid: 5,
    kind: 'stopped',
    signal: 5,
    event: 128,
  });
  // A syscall stop with PTRACE_O_TRACESYSGOOD: SIGTRAP | 0x80.
  assert.deepEqual(decodeWaitStatus(5, (0x85 << 8) | 0x7f), {
    pid: 5,
    kind: 'stopped',
    signal: 0x85,
    event: 0,
  });
});
