import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import { parseFdinfo } from '../../src/proc/fdinfo.js';
import { dataText } from '../helpers/data.js';

test('regular file: pos, octal flags, mnt_id, ino', () => {
  const f = parseFdinfo(dataText('fdinfo-regular.txt'));
  assert.equal(f.pos, 0n);
  assert.equal(f.flags, 0o2100000);
  assert.equal(f.mntId, 27);
  assert.equal(f.ino, 612n);
  assert.deepEqual(f.fields, {});
  assert.deepEqual(f.records, []);
});

test('eventfd: kind-specific fields', () => {
  const f = parseFdinfo(dataText('fdinfo-eventfd.txt'));
  assert.equal(f.fields['eventfd-count'], '5');
  assert.equal(f.fields['eventfd-semaphore'], '0');
});

test('timerfd: keys with spaces in them, and timespecs', () => {
  const f = parseFdinfo(dataText('fdinfo-timerfd.txt'));
  assert.equal(f.fields.clockid, '1');
  assert.equal(f.fields['settime flags'], '00');
  assert.equal(f.fields.it_value, '(0, 0)');
  assert.equal(f.fields.it_interval, '(1, 0)');
});

test('epoll and inotify: repeated records kept in order', () => {
  const epoll = parseFdinfo(dataText('fdinfo-epoll.txt'));
  assert.equal(epoll.records.length, 1);
  assert.equal(epoll.records[0]!.key, 'tfd');
  assert.match(epoll.records[0]!.value, /^3 events:\s+19 data:/);
  const inotify = parseFdinfo(dataText('fdinfo-inotify.txt'));
  assert.equal(inotify.records[0]!.key, 'inotify');
  assert.match(inotify.records[0]!.value, /^wd:1 ino:3f7e8/);
});

test('refuses malformed fdinfo', () => {
  const cases = ['pos:\t0\nflags:\t09\nmnt_id:\t1\n', 'flags:\t02\nmnt_id:\t1\n', 'pos: 0\njunk\n'];
  for (const text of cases) {
    assert.throws(
      () => parseFdinfo(text),
      (err: unknown) => isFerryError(err, 'FERRY_PARSE'),
    );
  }
});
