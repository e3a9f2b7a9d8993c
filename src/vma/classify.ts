// Classify VMAs by kind from what /proc shows: the maps line, the mm layout in stat, and where the
// threads' stack pointers are.
import type { MapsEntry } from '../proc/maps.js';
import { DELETED_SUFFIX, type Vma, type VmaKind } from './vma.js';

export interface MmLayout {
  startData: bigint;
  endData: bigint;
  startBrk: bigint;
}

interface Entry extends MapsEntry {
  vmFlags?: string[];
}

const SPECIAL: Record<string, VmaKind> = {
  '[vdso]': 'vdso',
  '[vvar]': 'vvar',
  '[vvar_vclock]': 'vvar',
  '[vsyscall]': 'vsyscall',
  '[heap]': 'heap',
  '[stack]': 'stack',
};

/** Names the kernel gives shared anonymous memory: shmem files without a path of their own. */
function isShmemName(name: string): boolean {
  return name === '/dev/zero' || name.startsWith('/SYSV') || name.startsWith('[anon_shmem:');
}

function isAnonymousName(name: string): boolean {
  return name === '' || name.startsWith('[anon:');
}

function kindOf(e: Entry, name: string, deleted: boolean, ctx: Context, prev: Vma | undefined): VmaKind {
  const special = SPECIAL[name];
  if (special) return special;
  if (e.perms.startsWith('---')) return 'guard';
  const shared = e.perms[3] === 's';
  if (shared) {
    if (isShmemName(name)) return 'anon-shared';
    return deleted ? 'deleted-file' : 'file-shared';
  }
  if (isAnonymousName(name)) {
    if (ctx.stackPointers.some((sp) => sp >= e.start && sp < e.end)) return 'stack';
    const afterData = prev !== undefined && prev.end === e.start && prev.kind === 'data';
    const inExeBss = e.start >= ctx.layout.endData && e.end <= ctx.layout.startBrk && ctx.layout.endData > 0n;
    return afterData || inExeBss ? 'bss' : 'anon';
  }
  if (deleted) return 'deleted-file';
  if (!ctx.programs.has(name)) return 'file-private';
  if (e.perms[2] === 'x') return 'text';
  return e.perms[1] === 'w' ? 'data' : 'rodata';
}

interface Context {
  layout: MmLayout;
  stackPointers: readonly bigint[];
  /** Paths mapped executable somewhere: loaded programs and libraries. */
  programs: ReadonlySet<string>;
}

function splitName(raw: string): { name: string; deleted: boolean } {
  return raw.endsWith(DELETED_SUFFIX)
    ? { name: raw.slice(0, -DELETED_SUFFIX.length), deleted: true }
    : { name: raw, deleted: false };
}

/**
 * Turn maps (or smaps) entries into classified VMAs. `stackPointers` are the threads' stack pointers
 * where known; an anonymous VMA holding one is a thread stack.
 */
export function classifyVmas(
  entries: readonly Entry[],
  layout: MmLayout,
  stackPointers: readonly bigint[],
): Vma[] {
  const programs = new Set(
    entries.filter((e) => e.perms[2] === 'x' && e.name.startsWith('/')).map((e) => splitName(e.name).name),
  );
  const ctx: Context = { layout, stackPointers, programs };
  const vmas: Vma[] = [];
  for (const e of entries) {
    const { name, deleted } = splitName(e.name);
    vmas.push({
      start: e.start,
      end: e.end,
      perms: e.perms,
      offset: e.offset,
      dev: e.dev,
      inode: e.inode,
      name,
      deleted,
      kind: kindOf(e, name, deleted, ctx, vmas.at(-1)),
      vmFlags: e.vmFlags ?? [],
    });
  }
  return vmas;
}
