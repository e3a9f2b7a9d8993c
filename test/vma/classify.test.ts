import assert from 'node:assert/strict';
import { test } from 'node:test';
import { vmasFrom, NO_LAYOUT, sampleVmas } from '../helpers/vma.js';

test('classifies every kind in a sample address space', () => {
  const kinds = sampleVmas().map((v) => `${v.kind} ${v.name}`);
  assert.deepEqual(kinds, [
    'rodata /usr/bin/prog',
    'text /usr/bin/prog',
    'rodata /usr/bin/prog',
    'data /usr/bin/prog',
    'bss ',
    'heap [heap]',
    'anon ',
    'guard ',
    'stack ',
    'file-private /usr/share/locale/data',
    'file-shared /var/lib/shared.db',
    'anon-shared /dev/zero',
    'anon-shared /SYSV00001234',
    'deleted-file /memfd:cache',
    'rodata /usr/lib/libc.so.6',
    'text /usr/lib/libc.so.6',
    'data /usr/lib/libc.so.6',
    'bss ',
    'vvar [vvar]',
    'vvar [vvar_vclock]',
    'vdso [vdso]',
    'stack [stack]',
    'vsyscall [vsyscall]',
  ]);
});

test('the deleted suffix is split off the name', () => {
  const [v] = vmasFrom(['7f00-8000 rw-s 00000000 00:01 5 /dev/zero (deleted)'], NO_LAYOUT);
  assert.equal(v!.name, '/dev/zero');
  assert.equal(v!.deleted, true);
});

test('anonymous memory not after a data segment nor holding a stack pointer is anon', () => {
  const vmas = vmasFrom(
    [
      '7f0000000000-7f0000001000 rw-p 00000000 00:00 0 ',
      '7f0000001000-7f0000002000 rw-p 00000000 00:00 0 [anon:jit]',
    ],
    NO_LAYOUT,
    [0x1000n],
  );
  assert.deepEqual(
    vmas.map((v) => v.kind),
    ['anon', 'anon'],
  );
});

test('a deleted program file stays deleted-file, a PROT_NONE file gap is a guard', () => {
  const vmas = vmasFrom([
    '7f0000000000-7f0000001000 r-xp 00000000 fe:00 9 /opt/app (deleted)',
    '7f0000001000-7f0000002000 ---p 00001000 fe:00 300 /usr/lib/libx.so',
    '7f0000002000-7f0000003000 r-xp 00002000 fe:00 300 /usr/lib/libx.so',
  ]);
  assert.deepEqual(
    vmas.map((v) => v.kind),
    ['deleted-file', 'guard', 'text'],
  );
});
