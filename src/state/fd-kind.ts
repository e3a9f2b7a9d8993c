// What every kind of file descriptor provides: how to recognize it, dump it, and give it back.
import type { Stats } from 'node:fs';
import type { Schema } from '../image/schema.js';
import type { Fdinfo } from '../proc/fdinfo.js';
import type { DumpContext, RestoreContext } from './context.js';
import { O } from '../sys/fcntl.js';

/** One open descriptor of the dumped process, as /proc shows it. */
export interface FdInfo {
  fd: number;
  /** readlink of /proc/PID/fd/N: a path, or `pipe:[ino]`, `socket:[ino]`, `anon_inode:[kind]`. */
  target: string;
  /** stat of what the descriptor refers to. */
  stat: Stats;
  fdinfo: Fdinfo;
}

/** What the stub opens to get a descriptor back. */
export interface Reopen {
  path: string;
  /** open(2) flags, O_CLOEXEC included when the descriptor had it. */
  flags: number;
  /** File position to seek to, or null. */
  pos: bigint | null;
}

export interface FilesRestoreContext extends RestoreContext {
  /** The terminal to give descriptors that were a terminal (or /dev/null). */
  terminal: string;
}

export interface FdKind<K extends string, R extends { fd: number }> {
  readonly kind: K;
  readonly record: Schema<R>;
  matches(info: FdInfo): boolean;
  dump(ctx: DumpContext, info: FdInfo): R;
  reopen(ctx: FilesRestoreContext, rec: R): Reopen;
}

/** Flags to open a path again with: as the process had them, minus creation and truncation. */
export function reopenFlags(flags: number): number {
  return (flags & ~(O.CREAT | O.EXCL | O.TRUNC)) | O.NOCTTY;
}

export const major = (rdev: number): number => ((rdev >> 8) & 0xfff) | ((rdev >> 32) & ~0xfff);
export const minor = (rdev: number): number => (rdev & 0xff) | ((rdev >> 12) & ~0xff);
