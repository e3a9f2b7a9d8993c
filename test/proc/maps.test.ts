import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import { parseMaps } from '../../src/proc/maps.js';
import { dataText } from '../helpers/data.js';

test('parses captured maps text line by line', () => {
  const text = dataText('maps.txt');
  const entries = parseMaps(text);
  assert.equal(entries.length, text.trimEnd().split('\n').length);
  const cat = entries[0]!;
  assert.equal(cat.start, 0x557028976000n);
  assert.equal(cat.end, 0x557028978000n);
  assert.equal(cat.perms, 'r--p');
  assert.equal(cat.offset, 0n);
  assert.equal(cat.dev, 'fe:00');
  assert.equal(cat.inode, 260131n);
  assert.equal(cat.name, '/usr/bin/cat');
  assert.ok(entries.some((e) => e.name === '[vdso]'));
  const vsyscall = entries.find((e) => e.name === '[vsyscall]')!;
  assert.equal(vsyscall.start, 0xffffffffff600000n);
  assert.equal(vsyscall.perms, '--xp');
});

test('keeps names with spaces, the deleted suffix, and empty names', () => {
  const text = [
    '7f0000000000-7f0000001000 rw-s 00000000 00:01 2049                       /dev/zero (deleted)',
    '7f0000001000-7f0000002000 r--p 00001000 fe:00 12                         /tmp/a file with spaces',
    '7f0000002000-7f0000003000 rw-p 00000000 00:00 0 ',
    '7f0000003000-7f0000004000 rw-p 00000000 00:00 0',
    '7f0000004000-7f0000005000 rw-p 00000000 00:00 0                          [anon:glibc: malloc]',
  ].join('\n');
  const names = parseMaps(text).map((e) => e.name);
  assert.deepEqual(names, ['/dev/zero (deleted)', '/tmp/a file with spaces', '', '', '[anon:glibc: malloc]']);
});

test('refuses malformed lines with the line number and text', () => {
  const cases: [string, RegExp][] = [
    ['garbage', /line 1: expected .*"garbage"/],
    ['7f00-7f10 rw-p 0 00:00 0\nnot a line', /line 2/],
    ['7f10-7f00 rw-p 00000000 00:00 0', /line 1/], // ends before it starts
    ['7f00-7f10 rwzp 00000000 00:00 0', /line 1/],
    ['7f00-7f10 rw-p 00000000 00:00 x', /line 1/],
  ];
  for (const [text, message] of cases) {
    assert.throws(
      () => parseMaps(text, '/proc/1/maps'),
      (err: unknown) =>
        isFerryError(err, 'FERRY_PARSE') && message.test(err.message) && err.message.includes('/proc/1/maps'),
    );
  }
});
