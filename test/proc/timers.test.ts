import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import { parseTimers } from '../../src/proc/timers.js';
import { dataText } from '../helpers/data.js';

test('parses captured /proc/PID/timers, in ID order', () => {
  assert.deepEqual(parseTimers(dataText('timers.txt')), [
    { id: 0, signal: 12, value: 0x1234n, notify: 'signal', tid: null, clock: 1 },
    { id: 1, signal: 10, value: 0x99n, notify: 'signal', tid: 755, clock: 0 },
    { id: 2, signal: 0, value: 0n, notify: 'none', tid: null, clock: 1 },
  ]);
  assert.deepEqual(parseTimers(''), []);
});

test('a damaged timers file is refused with the line', () => {
  assert.throws(
    () => parseTimers('ID: 0\nsignal: x\nnotify: none/pid.1\nClockID: 1\n', '/proc/1/timers'),
    (err: unknown) => isFerryError(err, 'FERRY_PARSE') && /timers line 2: expected "signal/.test(err.message),
  );
  assert.throws(
    () => parseTimers('ID: 0\n'),
    (err: unknown) => isFerryError(err, 'FERRY_PARSE'),
  );
});
