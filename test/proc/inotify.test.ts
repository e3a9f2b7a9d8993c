import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import { parseFdinfo } from '../../src/proc/fdinfo.js';
import { parseInotifyWatches } from '../../src/proc/inotify.js';
import { parseMountinfo } from '../../src/proc/mountinfo.js';
import { dataText } from '../helpers/data.js';

const WATCHES = [
  [1, 0xfe, 0, 0x100, 1, 'e8f7030000000000'],
  [2, 0x23, 5, 0x40000100, 1, '020021006ba7b876'],
  [3, 0xfe, 0, 0x302, 1, 'e8f7030000000000'],
];

test('inotify watches from captured fdinfo, in wd order, with device and handle', () => {
  const records = parseFdinfo(dataText('fdinfo-inotify.txt')).records.map((r) => r.value);
  const watches = parseInotifyWatches(records);
  assert.deepEqual(
    watches.map((w) => [w.wd, w.major, w.minor, w.mask, w.handleType, w.handle.toString('hex')]),
    WATCHES,
  );
  assert.ok(watches.every((w, i) => i === 0 || watches[i - 1]!.wd < w.wd));
});

test('a damaged inotify record is refused with its line', () => {
  const bad = 'wd:1 ino:2 sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:0200';
  assert.throws(
    () => parseInotifyWatches([bad], '/proc/1/fdinfo/3'),
    (err: unknown) =>
      isFerryError(err, 'FERRY_PARSE') && /fdinfo\/3 line 1: expected a handle of 8 bytes/.test(err.message),
  );
  assert.throws(
    () => parseInotifyWatches(['wd:1 mask:100']),
    (err: unknown) => isFerryError(err, 'FERRY_PARSE'),
  );
});

test('mountinfo: device, root and mount point, escapes undone', () => {
  assert.deepEqual(parseMountinfo(dataText('mountinfo.txt')), [
    { id: 22, major: 0, minor: 21, root: '/', mountPoint: '/proc' },
    { id: 27, major: 254, minor: 0, root: '/', mountPoint: '/' },
    { id: 31, major: 254, minor: 0, root: '/srv/data', mountPoint: '/mnt/my data' },
    { id: 40, major: 0, minor: 34, root: '/', mountPoint: '/tmp' },
  ]);
  assert.throws(
    () => parseMountinfo('27 1 254:0\n', '/proc/1/mountinfo'),
    (err: unknown) => isFerryError(err, 'FERRY_PARSE') && /mountinfo line 1/.test(err.message),
  );
});
