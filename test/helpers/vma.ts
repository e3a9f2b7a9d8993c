// Build VMAs for selection and classification tests from maps-style lines.
import { parseMaps } from '../../src/proc/maps.js';
import { classifyVmas, type MmLayout } from '../../src/vma/classify.js';
import type { Vma } from '../../src/vma/vma.js';

export const NO_LAYOUT: MmLayout = { startData: 0n, endData: 0n, startBrk: 0n };

export function vmasFrom(lines: string[], layout = NO_LAYOUT, stackPointers: bigint[] = []): Vma[] {
  return classifyVmas(parseMaps(lines.join('\n')), layout, stackPointers);
}

/** A small but complete address space: a program, its bss and heap, a library, and the rest. */
export const SAMPLE = [
  '555555554000-555555556000 r--p 00000000 fe:00 100 /usr/bin/prog',
  '555555556000-555555558000 r-xp 00002000 fe:00 100 /usr/bin/prog',
  '555555558000-555555559000 r--p 00004000 fe:00 100 /usr/bin/prog',
  '555555559000-55555555a000 rw-p 00005000 fe:00 100 /usr/bin/prog',
  '55555555a000-55555555b000 rw-p 00000000 00:00 0 ',
  '555555600000-555555621000 rw-p 00000000 00:00 0                          [heap]',
  '7f0000000000-7f0000800000 rw-p 00000000 00:00 0 ',
  '7f0000800000-7f0000801000 ---p 00000000 00:00 0 ',
  '7f0000801000-7f0001001000 rw-p 00000000 00:00 0 ',
  '7f1000000000-7f1000100000 r--p 00000000 fe:00 200 /usr/share/locale/data',
  '7f1000100000-7f1000101000 rw-s 00000000 fe:00 201 /var/lib/shared.db',
  '7f1000101000-7f1000102000 rw-s 00000000 00:01 5 /dev/zero (deleted)',
  '7f1000102000-7f1000103000 rw-s 00000000 00:01 6 /SYSV00001234 (deleted)',
  '7f1000103000-7f1000104000 rw-p 00000000 00:01 7 /memfd:cache (deleted)',
  '7f1000104000-7f1000105000 r--p 00000000 fe:00 300 /usr/lib/libc.so.6',
  '7f1000105000-7f1000106000 r-xp 00001000 fe:00 300 /usr/lib/libc.so.6',
  '7f1000106000-7f1000107000 rw-p 00002000 fe:00 300 /usr/lib/libc.so.6',
  '7f1000107000-7f1000108000 rw-p 00000000 00:00 0 ',
  '7f1000200000-7f1000204000 r--p 00000000 00:00 0                          [vvar]',
  '7f1000204000-7f1000206000 r--p 00000000 00:00 0                          [vvar_vclock]',
  '7f1000206000-7f1000208000 r-xp 00000000 00:00 0                          [vdso]',
  '7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]',
  'ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]',
];

export const SAMPLE_LAYOUT: MmLayout = {
  startData: 0x555555559000n,
  endData: 0x55555555a000n,
  startBrk: 0x555555600000n,
};

/** Thread stack pointer inside the second anonymous region (after the guard page). */
export const SAMPLE_THREAD_SP = 0x7f0001000f00n;

export const sampleVmas = (): Vma[] => vmasFrom(SAMPLE, SAMPLE_LAYOUT, [SAMPLE_THREAD_SP]);
