// What every kind of file descriptor provides: how to recognize it, dump it, and give it back.
import type { Stats } from 'node:fs';
import type { Schema } from '../image/schema.js';
import type { Fdinfo } from '../proc/fdinfo.js';
import { asUser, type DumpContext, type RestoreContext } from './context.js';
import type { TreeFiles } from './fd-shared.js';
import type { ControllingRecord } from './fd-pty.js';
import { AT_FDCWD, O } from '../sys/fcntl.js';
import { NR } from '../sys/nr.js';
import type { RemoteCall } from '../tracee/remote.js';

const SEEK_SET = 0;
const F_SETFL = 4;
/** File status flags F_SETFL sets: O_APPEND, O_NONBLOCK, O_DIRECT (a pipe's packet mode). */
const STATUS_FLAGS = O.APPEND | O.NONBLOCK | 0o40000;

/** One open descriptor of the dumped process, as /proc shows it. */
export interface FdInfo {
  fd: number;
  /** readlink of /proc/PID/fd/N: a path, or `pipe:[ino]`, `socket:[ino]`, `anon_inode:[kind]`. */
  target: string;
  /** stat of what the descriptor refers to. */
  stat: Stats;
  fdinfo: Fdinfo;
  /** For a socket: its address family, and ferry's copy of it to read it through. */
  socket: { family: number; copy: number } | null;
  /**
   * For a pipe a process outside the dump holds too, or a Unix socket whose peer one holds: that
   * process ("logger (process 55)"); else null.
   */
  outside: string | null;
}

/** What the stub opens to get a descriptor back. */
export interface Reopen {
  path: string;
  /** open(2) flags, O_CLOEXEC included when the descriptor had it. */
  flags: number;
  /** File position to seek to, or null. */
  pos: bigint | null;
}

export interface FilesDumpContext extends DumpContext {
  /** Every descriptor of the process, by number (a pipe's other end, what an epoll watches). */
  fds: ReadonlyMap<number, FdInfo>;
  /** What the processes of the tree dumped so far hold. */
  tree: TreeFiles;
}

export interface FilesRestoreContext extends RestoreContext {
  /** The terminal to give descriptors that were a terminal (or /dev/null). */
  terminal: string;
  /** The process's controlling terminal, a pty of the image's, to take again; or null. */
  controlling: ControllingRecord;
}

/**
 * How kinds make their descriptors in the stub. Made descriptors are kept out of the way (above
 * every saved number) until each is placed at its number, all at once; calls are batched.
 */
export interface FdBuilder {
  /** A call that returns a new descriptor: where that descriptor is kept. */
  create(call: RemoteCall): number;
  /** A call that writes two new descriptors (pipe2) to `out`: where they are kept. */
  createPair(call: RemoteCall, out: bigint): [number, number];
  /** A call on made descriptors, before they are placed (fcntl, lseek). */
  call(call: RemoteCall): void;
  /** Run the calls so far (to reuse scratch memory after). */
  flush(): void;
  /** What was made for `key` (a pipe's ends, for the second end's record), made on first use. */
  shared<T>(key: string, make: () => T): T;
  /** Hand a copy of `made` to ferry for later processes of the tree, if one asks for `key`. */
  lend(key: string, made: number): void;
  /** A descriptor an earlier process lent under `key`, made here; undefined if none was. */
  borrow(key: string): number | undefined;
  /** Put descriptor `made` at `fd`, close-on-exec if `flags` has O_CLOEXEC. */
  place(fd: number, made: number, flags: number): void;
  /** A call for once every descriptor is in place (an epoll's interest list). */
  after(call: RemoteCall): void;
  /** A descriptor number free once every descriptor is in place, for after() calls to use. */
  spare(): number;
}

/** Give a descriptor back by opening a path again. */
export function reopen(ctx: FilesRestoreContext, fds: FdBuilder, fd: number, spec: Reopen): void {
  const made = createAsUser(ctx, fds, {
    name: `open(${spec.path})`,
    nr: NR.openat,
    args: [AT_FDCWD, ctx.remote.putString(spec.path), spec.flags & ~O.CLOEXEC, 0],
  });
  if (spec.pos !== null && spec.pos > 0n)
    fds.call({ name: `lseek(${fd})`, nr: NR.lseek, args: [made, spec.pos, SEEK_SET] });
  fds.place(fd, made, spec.flags);
}

/** fds.create(call) with the process's file credentials (asUser()): the descriptor it makes. */
export function createAsUser(ctx: FilesRestoreContext, fds: FdBuilder, call: RemoteCall): number {
  const { calls, at } = asUser(ctx, call);
  calls.slice(0, at).forEach((c) => fds.call(c));
  const made = fds.create(calls[at]!);
  calls.slice(at + 1).forEach((c) => fds.call(c));
  return made;
}

/** fds.call(call) with the process's file credentials (asUser()). */
export function callAsUser(ctx: FilesRestoreContext, fds: FdBuilder, call: RemoteCall): void {
  for (const c of asUser(ctx, call).calls) fds.call(c);
}

/** Give a made descriptor the file status flags (O_NONBLOCK, ...) it had. */
export function setStatusFlags(fds: FdBuilder, made: number, flags: number): void {
  const status = flags & STATUS_FLAGS;
  if (status !== 0) fds.call({ name: 'fcntl(F_SETFL)', nr: NR.fcntl, args: [made, F_SETFL, status] });
}

export interface FdKind<K extends string, R extends { fd: number }> {
  readonly kind: K;
  readonly record: Schema<R>;
  matches(info: FdInfo): boolean;
  dump(ctx: FilesDumpContext, info: FdInfo): R;
  restore(ctx: FilesRestoreContext, rec: R, fds: FdBuilder): void;
}

/** Flags to open a path again with: as the process had them, minus creation and truncation. */
export function reopenFlags(flags: number): number {
  return (flags & ~(O.CREAT | O.EXCL | O.TRUNC)) | O.NOCTTY;
}

// glibc's dev_t split (sys/sysmacros.h). A dev_t has up to 64 bits: the bits above 32 are reached by
// division, as JavaScript's shift operators work on 32 bits only.
export const major = (rdev: number): number =>
  (Math.floor(rdev / 2 ** 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
export const minor = (rdev: number): number => (rdev & 0xff) | (Math.floor(rdev / 2 ** 12) & ~0xff);
/** A device as /proc/PID/maps writes it: major:minor in hex, two digits at least. */
export const deviceName = (dev: number): string =>
  `${major(dev).toString(16).padStart(2, '0')}:${minor(dev).toString(16).padStart(2, '0')}`;
