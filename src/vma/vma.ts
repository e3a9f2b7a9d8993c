// The VMA model: one virtual memory area, its kind, and the names used by inspect, the selection
// language and the checkpoint.
import type { MapsEntry } from '../proc/maps.js';

/** What a VMA holds, as far as maps, smaps and the mm layout tell. */
export const VMA_KINDS = [
  'text',
  'rodata',
  'data',
  'bss',
  'heap',
  'stack',
  'anon',
  'anon-shared',
  'file-private',
  'file-shared',
  'deleted-file',
  'guard',
  'vdso',
  'vvar',
  'vsyscall',
] as const;

export type VmaKind = (typeof VMA_KINDS)[number];

export const VMA_KIND_DESCRIPTIONS: Record<VmaKind, string> = {
  text: 'executable code of a program or library (file-backed, r-x)',
  rodata: 'read-only data of a program or library (file-backed, r--)',
  data: 'initialized writable data of a program or library (file-backed, rw-)',
  bss: 'zero-initialized data right after a data segment (anonymous)',
  heap: 'the brk heap ([heap])',
  stack: 'the main stack ([stack]) or a thread stack',
  anon: 'other private anonymous memory (mmap, malloc arenas, JIT)',
  'anon-shared': 'shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, SysV shm)',
  'file-private': 'a private mapping of a file that is not a loaded program',
  'file-shared': 'a shared mapping of a file',
  'deleted-file': 'a mapping of a file that no longer has a name (deleted, memfd)',
  guard: 'an inaccessible (PROT_NONE) region: stack guards, reservations',
  vdso: 'the kernel-provided vDSO code ([vdso])',
  vvar: 'the kernel-provided vDSO data ([vvar], [vvar_vclock])',
  vsyscall: 'the legacy vsyscall page ([vsyscall])',
};

/** A VMA as maps shows it, classified; `name` has no ' (deleted)' suffix (see `deleted`). */
export interface Vma extends MapsEntry {
  /** The mapped file has been deleted (maps shows ' (deleted)'). */
  deleted: boolean;
  kind: VmaKind;
  vmFlags: string[];
}

export const DELETED_SUFFIX = ' (deleted)';

export function vmaSize(vma: { start: bigint; end: bigint }): bigint {
  return vma.end - vma.start;
}

export const isShared = (vma: Vma): boolean => vma.perms[3] === 's';

/** Kinds whose content the kernel provides; a checkpoint never stores them. */
export const SPECIAL_KINDS: ReadonlySet<VmaKind> = new Set(['vdso', 'vvar', 'vsyscall']);

/** Kinds backed by a named file. */
export const FILE_KINDS: ReadonlySet<VmaKind> = new Set([
  'text',
  'rodata',
  'data',
  'file-private',
  'file-shared',
  'deleted-file',
]);
