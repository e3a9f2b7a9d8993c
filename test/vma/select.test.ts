import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import { parseVmaSelection } from '../../src/vma/select.js';
import { sampleVmas } from '../helpers/vma.js';

const selected = (spec: string): string[] =>
  sampleVmas()
    .filter((v) => parseVmaSelection(spec).matches(v))
    .map((v) => `${v.kind}@${v.start.toString(16)}`);

const kindsOf = (spec: string): string[] => [...new Set(selected(spec).map((s) => s.split('@')[0]!))];

test('kinds, groups and their union', () => {
  assert.deepEqual(kindsOf('heap'), ['heap']);
  assert.deepEqual(kindsOf('heap,stack'), ['heap', 'stack']);
  assert.deepEqual(kindsOf('file'), [
    'rodata',
    'text',
    'data',
    'file-private',
    'file-shared',
    'deleted-file',
  ]);
  assert.deepEqual(kindsOf('shared'), ['file-shared', 'anon-shared']);
  assert.deepEqual(kindsOf('special'), ['vvar', 'vdso', 'vsyscall']);
  assert.equal(selected('all').length, sampleVmas().length);
  assert.equal(selected('private').length + selected('shared').length, sampleVmas().length);
});

test('exclusions: !term removes from the union, or from everything when alone', () => {
  assert.deepEqual(kindsOf('file,!text'), ['rodata', 'data', 'file-private', 'file-shared', 'deleted-file']);
  assert.equal(selected('!special').length, sampleVmas().length - 4);
  assert.deepEqual(kindsOf(' heap , ! heap '), []);
});

test('permissions: letters all required, or a maps-style mask', () => {
  assert.deepEqual(kindsOf('x'), ['text', 'vdso', 'vsyscall']);
  assert.deepEqual(kindsOf('perm:rwxp'), []);
  assert.deepEqual(kindsOf('perm:ws'), ['file-shared', 'anon-shared']);
  assert.deepEqual(kindsOf('perm:r-xp'), ['text', 'vdso']);
  assert.deepEqual(kindsOf('perm:---'), ['guard']);
  assert.deepEqual(kindsOf('w,!shared,!anon,!stack,!heap,!bss,!data'), ['deleted-file']);
});

test('path globs match the name; * spans directories', () => {
  assert.deepEqual(kindsOf('path:/usr/lib/*'), ['rodata', 'text', 'data']);
  assert.deepEqual(kindsOf('path:/usr/*'), ['rodata', 'text', 'data', 'file-private']);
  assert.deepEqual(kindsOf('path:[heap]'), ['heap']);
  assert.deepEqual(kindsOf('path:/memfd:?ache'), ['deleted-file']);
  assert.deepEqual(kindsOf('path:/usr/lib/libc.so.?'), ['rodata', 'text', 'data']);
});

test('addresses: any VMA that overlaps a range, or holds an address', () => {
  assert.deepEqual(selected('0x555555600000-0x555555600001'), ['heap@555555600000']);
  assert.deepEqual(selected('0x5555555fffff-0x555555600001'), ['heap@555555600000']);
  assert.deepEqual(selected('0x555555620fff'), ['heap@555555600000']);
  assert.deepEqual(selected('0x555555621000-0x555555700000'), []);
  assert.equal(selected('0x555555554000-0x55555555b000').length, 5);
});

test('bad specs are refused, naming the bad term', () => {
  const cases: [string, string][] = [
    ['', 'the selection is empty'],
    ['heap,,stack', 'empty term'],
    ['heap,hepa', '"hepa"'],
    ['!', 'empty term'],
    ['perm:rwq', '"perm:rwq"'],
    ['path:', 'needs a glob'],
    ['0x2000-0x1000', 'must end after it starts'],
    ['0xzz', '"0xzz"'],
  ];
  for (const [spec, words] of cases) {
    assert.throws(
      () => parseVmaSelection(spec),
      (err: unknown) => isFerryError(err, 'FERRY_BAD_VMA_SPEC') && err.message.includes(words),
      `spec ${JSON.stringify(spec)}`,
    );
  }
});
