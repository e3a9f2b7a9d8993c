// The VMA list: every VMA keeps its place and protections in the image; those a checkpoint does not
// store (outside --vmas) come back as fresh mappings. Restore maps them all, writable where pages
// must be filled in, and sets the final protections once the pages are in. A mapping of a deleted
// file or memfd keeps that file's content in the image (its backing), given back as a ghost file or
// a memfd. What such VMAs map, and shared anonymous memory, is one object however many VMAs (and
// memfd descriptors), in however many processes of the tree, have it: made once, and mapped by all
// from ferry's descriptor of it.
import { FerryError } from '../errors.js';
import { array, boolean, hex64, nullable, object, oneOf, string, type Infer } from '../image/schema.js';
import { NR } from '../sys/nr.js';
import { MADV, MAP, MLOCK_ONFAULT, PROT } from '../sys/mman.js';
import type { RemoteCall } from '../tracee/remote.js';
import { SPECIAL_KINDS, VMA_KINDS, type Vma } from '../vma/vma.js';
import { guardSpans, smapsMarksGuards } from '../vma/pages.js';
import { mergeSpans } from '../vma/spans.js';
import {
  asUser,
  expectFd,
  lowestFreeFd,
  unsupportedMessage,
  type DumpContext,
  type RestoreContext,
} from '../state/context.js';
import { ghostKey, ghostRecord, heldGhost, heldMemfd, saveGhost, type GhostRecord } from '../state/ghost.js';
import { borrowCall, ferryPidfdCall, shmemKey } from '../state/fd-shared.js';
import { AT_FDCWD, O } from '../sys/fcntl.js';
import { SHM_EXEC, SHM_RDONLY, SHM_REMAP } from '../sys/shm.js';
import { isSysv } from '../state/sysv.js';

/** 'pages': its pages are in the page store; 'layout': outside --vmas, mapped fresh; 'kernel': vdso and kin. */
export const VMA_CONTENTS = ['pages', 'layout', 'kernel', 'remote'] as const;
export type VmaContent = (typeof VMA_CONTENTS)[number];

export const vmaRecord = object({
  start: hex64,
  end: hex64,
  perms: string({ pattern: /^[r-][w-][x-][ps]$/ }),
  offset: hex64,
  dev: string({ pattern: /^[0-9a-f]+:[0-9a-f]+$/ }),
  inode: hex64,
  name: string({ max: 4096 }),
  deleted: boolean,
  kind: oneOf(VMA_KINDS),
  vmFlags: array(string({ pattern: /^[a-z0-9]{2}$/ }), { max: 64 }),
  content: oneOf(VMA_CONTENTS),
  backing: nullable(ghostRecord),
  /** Its guard regions (MADV_GUARD_INSTALL), page ranges; none before version 8. */
  guards: array(object({ start: hex64, end: hex64 }), { max: 1 << 16 }),
});
export const vmasRecord = array(vmaRecord, { max: 1 << 20 });
export type VmaRecord = Infer<typeof vmaRecord>;

const PR_SET_VMA = 0x53564d41;
const PR_SET_VMA_ANON_NAME = 0;

const ANON_NAME = /^\[anon:(.*)\]$/;
const KNOWN_PSEUDO = new Set(['[heap]', '[stack]', '[vdso]', '[vvar]', '[vvar_vclock]', '[vsyscall]']);

/** Why a VMA cannot be restored yet, or null when it can. */
function refusal(v: Vma): string | null {
  // The kernel's ring of an io_setup() context: its requests in flight live in the kernel.
  if (v.name === '/[aio]' && v.deleted) return 'is the ring of an AIO context (io_setup)';
  if (v.kind === 'anon-shared' && v.name !== '/dev/zero' && !isSysv(v))
    return `is named shared memory (${v.name})`;
  if (v.name.startsWith('[') && !KNOWN_PSEUDO.has(v.name) && !ANON_NAME.test(v.name))
    return `is the special mapping ${v.name}`;
  return null;
}

const hex = (n: bigint): string => `0x${n.toString(16)}`;

/** Mapped from a file (its pages there, but those copied on write). */
export const isFileBacked = (v: VmaRecord): boolean => v.name.startsWith('/') && v.kind !== 'anon-shared';

export const isPrivateAnonymous = (v: VmaRecord): boolean =>
  v.perms[3] === 'p' && v.backing === null && !isFileBacked(v) && v.content !== 'kernel' && !isSysv(v);

/**
 * Whether a VMA's pages may come in after its process runs (a lazy restore, post-copy): private
 * anonymous memory the process can touch; not locked (mlock makes every page at once), droppable
 * or holding guard regions.
 */
export const lazyCapable = (v: VmaRecord): boolean =>
  isPrivateAnonymous(v) &&
  v.perms.slice(0, 3) !== '---' &&
  !v.vmFlags.includes('lo') &&
  !v.vmFlags.includes('dp') &&
  v.guards.length === 0;

/**
 * The VMAs' records: the pages of those `selected` are stored (content `pages`), or with `remote`
 * those of the ones lazyCapable() are sent after the process runs (content `remote`: a post-copy
 * migration).
 */
export function dumpVmas(
  ctx: DumpContext,
  vmas: readonly Vma[],
  selected: (v: Vma) => boolean,
  remote = false,
): VmaRecord[] {
  const backings = new Map<string, GhostRecord>();
  // Where smaps marks the VMAs that may hold guard regions, only those are walked for them.
  const marked = smapsMarksGuards();
  const guards = guardSpans(
    ctx.pid,
    mergeSpans(vmas.filter((v) => !SPECIAL_KINDS.has(v.kind) && (!marked || v.vmFlags.includes('gu')))),
  );
  return vmas.map((v) => {
    const range = `VMA ${hex(v.start)}-${hex(v.end)} (${v.kind})`;
    const why = refusal(v);
    if (why) {
      throw new FerryError(
        'FERRY_UNSUPPORTED_STATE',
        unsupportedMessage(ctx.pid, range, `${why}, which ferry cannot checkpoint yet`),
      );
    }
    const content: VmaContent = SPECIAL_KINDS.has(v.kind) ? 'kernel' : selected(v) ? 'pages' : 'layout';
    let backing: GhostRecord | null = null;
    if (v.kind === 'deleted-file') {
      // One copy per file, however many VMAs map it.
      const key = `${v.dev}:${v.inode}`;
      const source = `/proc/${ctx.pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`;
      backing = backings.get(key) ?? saveGhost(ctx, range, source, `files/map-${ctx.pid}-${backings.size}`);
      backings.set(key, backing);
    }
    const own = guards
      .filter((g) => g.start < v.end && g.end > v.start)
      .map((g) => ({ start: g.start > v.start ? g.start : v.start, end: g.end < v.end ? g.end : v.end }));
    const record: VmaRecord = { ...v, content, backing, guards: own };
    return remote && content === 'pages' && lazyCapable(record) ? { ...record, content: 'remote' } : record;
  });
}

const MEMFD = '/memfd:';

/** The descriptor in the stub of each object its VMAs map from ferry, by backingKey(). */
export type Backings = Map<string, number>;

/** Shared anonymous memory (not a SysV segment, which sysv.ts makes and each VMA attaches). */
const isShmem = (v: VmaRecord): boolean => v.kind === 'anon-shared' && !isSysv(v);

/** The key of the object a VMA maps from ferry (shared memory, a ghost, a memfd), if it does. */
function backingKey(v: VmaRecord): string | undefined {
  return isShmem(v) ? shmemKey(v.dev, v.inode) : v.backing ? ghostKey(v.backing) : undefined;
}

/**
 * The shared anonymous memory objects of a tree's VMAs, by key: the size each must have (the end
 * of the furthest part of it any VMA maps).
 */
export function sharedMemory(vmaLists: readonly (readonly VmaRecord[])[]): Map<string, bigint> {
  const sizes = new Map<string, bigint>();
  for (const v of vmaLists.flat()) {
    if (!isShmem(v)) continue;
    const key = shmemKey(v.dev, v.inode);
    const end = v.offset + v.end - v.start;
    if (end > (sizes.get(key) ?? 0n)) sizes.set(key, end);
  }
  return sizes;
}

/**
 * Make, in the stub, a shared memory object the tree has not made yet, and have ferry hold it (an
 * anonymous shared mapping, opened through /proc/PID/map_files, then unmapped): `/proc` shows the
 * VMAs mapped from it as anonymous shared memory again.
 */
function makeShmem(ctx: RestoreContext, key: string): number {
  const size = ctx.tree.shmem.get(key)!;
  const remote = ctx.remote;
  const at = remote.check(
    'mmap(shared)',
    NR.mmap,
    0,
    size,
    PROT.READ | PROT.WRITE,
    MAP.SHARED | MAP.ANONYMOUS,
    -1,
    0,
  );
  try {
    return ctx.tree.holdPath(
      key,
      `/proc/${ctx.pid}/map_files/${at.toString(16)}-${(at + size).toString(16)}`,
    );
  } finally {
    remote.check('munmap(shared)', NR.munmap, at, size);
  }
}

/** ferry's descriptor of the object `v` maps (under `key`), made if the tree has not made it yet. */
function heldBacking(ctx: RestoreContext, key: string, v: VmaRecord): number {
  if (isShmem(v)) return ctx.tree.get(key) ?? makeShmem(ctx, key);
  if (v.name.startsWith(MEMFD)) return heldMemfd(ctx, v.name.slice(MEMFD.length), v.backing!);
  return heldGhost(ctx, v.name, v.backing!);
}

/**
 * Give the stub the objects its VMAs map from ferry (shared memory, ghost files, memfds), each
 * made by the first process of the tree that maps it. Returns them by backingKey().
 */
export function prepareBackings(ctx: RestoreContext, vmas: readonly VmaRecord[]): Backings {
  const backings: Backings = new Map();
  const calls: RemoteCall[] = [];
  const first = lowestFreeFd(ctx.pid); // the kernel gives the lowest free descriptor each time
  for (const v of vmas) {
    const key = backingKey(v);
    if (key === undefined || backings.has(key)) continue;
    const held = heldBacking(ctx, key, v);
    if (calls.length === 0) calls.push(ferryPidfdCall());
    backings.set(key, first + calls.length);
    calls.push(borrowCall(first, held, key));
  }
  const results = ctx.remote.batch(calls);
  results.forEach((got, i) => expectFd(got, first + i, calls[i]!.name));
  if (calls.length > 0) ctx.remote.check('close(pidfd)', NR.close, first);
  return backings;
}

/** Close the descriptors of prepareBackings once everything is mapped. */
export function closeBackings(ctx: RestoreContext, backings: Backings): void {
  const fds = [...backings.values()];
  ctx.remote.batch(fds.map((fd) => ({ name: `close(${fd})`, nr: NR.close, args: [fd] })));
}

export function protOf(perms: string): number {
  return (
    (perms[0] === 'r' ? PROT.READ : 0) |
    (perms[1] === 'w' ? PROT.WRITE : 0) |
    (perms[2] === 'x' ? PROT.EXEC : 0)
  );
}

/**
 * Map every VMA but the kernel's at its place. `filled` holds the VMAs pages will be written into:
 * they are mapped writable until protect().
 */
export function mapVmas(
  ctx: RestoreContext,
  vmas: readonly VmaRecord[],
  filled: ReadonlySet<VmaRecord>,
  backings: Backings,
): void {
  const remote = ctx.remote;
  const fd = lowestFreeFd(ctx.pid);
  const calls: RemoteCall[] = [];
  const opens: number[] = [];
  for (const v of vmas) {
    if (v.content === 'kernel') continue;
    const len = v.end - v.start;
    const shared = v.perms[3] === 's';
    const prot = protOf(v.perms) | (filled.has(v) ? PROT.READ | PROT.WRITE : 0);
    // VmFlags: gd grows down, nr MAP_NORESERVE, dp MAP_DROPPABLE (private anonymous memory the
    // kernel may drop under pressure).
    const type = shared ? MAP.SHARED : v.vmFlags.includes('dp') ? MAP.DROPPABLE : MAP.PRIVATE;
    const flags =
      type |
      MAP.FIXED |
      (v.vmFlags.includes('gd') ? MAP.GROWSDOWN : 0) |
      (v.vmFlags.includes('nr') ? MAP.NORESERVE : 0);
    const at = `0x${v.start.toString(16)}`;
    const key = backingKey(v);
    const backing = key === undefined ? undefined : backings.get(key);
    if (isSysv(v)) {
      // Attached writable where pages go in (protectVmas takes the write access away after).
      const shmFlags = SHM_REMAP | (prot & PROT.WRITE ? 0 : SHM_RDONLY) | (prot & PROT.EXEC ? SHM_EXEC : 0);
      calls.push({ name: `shmat(${v.inode}, ${at})`, nr: NR.shmat, args: [v.inode, v.start, shmFlags] });
    } else if (backing !== undefined) {
      const args = [v.start, len, prot, flags, backing, v.offset];
      calls.push({ name: `mmap(${at}, ${v.name})`, nr: NR.mmap, args });
    } else if (isFileBacked(v)) {
      // Opened for writing where the process may make it writable (mw: its file was opened so),
      // even if it is read-only now: mprotect(PROT_WRITE) must work after as before.
      const mode = (shared && v.vmFlags.includes('mw') ? O.RDWR : O.RDONLY) | O.CLOEXEC;
      const open = asUser(ctx, {
        name: `open(${v.name})`,
        nr: NR.openat,
        args: [AT_FDCWD, remote.putString(v.name), mode, 0],
      });
      opens.push(calls.length + open.at);
      calls.push(...open.calls);
      calls.push({
        name: `mmap(${at}, ${v.name})`,
        nr: NR.mmap,
        args: [v.start, len, prot, flags, fd, v.offset],
      });
      calls.push({ name: 'close', nr: NR.close, args: [fd] });
    } else {
      const args = [v.start, len, prot, flags | MAP.ANONYMOUS, -1, 0];
      calls.push({ name: `mmap(${at})`, nr: NR.mmap, args });
    }
    const anonName = ANON_NAME.exec(v.name);
    if (anonName) {
      const name = remote.putString(anonName[1]!);
      calls.push({
        name: `prctl(PR_SET_VMA_ANON_NAME, ${at})`,
        nr: NR.prctl,
        args: [PR_SET_VMA, PR_SET_VMA_ANON_NAME, v.start, len, name],
      });
    }
  }
  const results = remote.batch(calls);
  for (const i of opens) expectFd(results[i], fd, calls[i]!.name);
}

/** The calls that set the final protections of the VMAs that were mapped writable to be filled. */
export function protectCalls(filled: ReadonlySet<VmaRecord>): RemoteCall[] {
  const calls: RemoteCall[] = [];
  for (const v of filled) {
    const prot = protOf(v.perms);
    if (prot === (PROT.READ | PROT.WRITE)) continue;
    calls.push({
      name: `mprotect(0x${v.start.toString(16)})`,
      nr: NR.mprotect,
      args: [v.start, v.end - v.start, prot],
    });
  }
  return calls;
}

/** VmFlags of smaps that madvise sets, and the advice that sets each. */
const ADVICE: Record<string, number> = {
  rr: MADV.RANDOM,
  sr: MADV.SEQUENTIAL,
  dc: MADV.DONTFORK,
  mg: MADV.MERGEABLE,
  hg: MADV.HUGEPAGE,
  nh: MADV.NOHUGEPAGE,
  dd: MADV.DONTDUMP,
  wf: MADV.WIPEONFORK,
};

/**
 * The calls that give each VMA the advice it had (madvise: DONTFORK, DONTDUMP, HUGEPAGE, ...) and
 * lock what was locked (mlock, or mlock2 ON_FAULT), once its pages are in.
 */
export function adviceCalls(vmas: readonly VmaRecord[]): RemoteCall[] {
  const calls: RemoteCall[] = [];
  for (const v of vmas) {
    if (v.content === 'kernel') continue;
    const at = `0x${v.start.toString(16)}`;
    const len = v.end - v.start;
    for (const flag of v.vmFlags) {
      const advice = ADVICE[flag];
      if (advice !== undefined)
        calls.push({ name: `madvise(${at}, ${flag})`, nr: NR.madvise, args: [v.start, len, advice] });
    }
    for (const g of v.guards)
      calls.push({
        name: `madvise(0x${g.start.toString(16)}, MADV_GUARD_INSTALL)`,
        nr: NR.madvise,
        args: [g.start, g.end - g.start, MADV.GUARD_INSTALL],
      });
    if (v.vmFlags.includes('lo')) {
      const onFault = v.vmFlags.includes('lf');
      calls.push({ name: `mlock2(${at})`, nr: NR.mlock2, args: [v.start, len, onFault ? MLOCK_ONFAULT : 0] });
    }
  }
  return calls;
}
