// Pipes: made again with pipe2, at the capacity they had, and given back the bytes that were
// buffered in them (read at dump time without taking them out). The first process of a tree that
// holds a pipe makes it and lends its ends to the others. An end nobody holds any more is closed
// again once made; a pipe whose other end is held outside the dump is refused
// (TreeFiles.checkEnds): nothing here could give that end back. FIFOs too.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { boolean, integer, nullable, object, string, type Infer } from '../image/schema.js';
import { AT_FDCWD, O } from '../sys/fcntl.js';
import { NR } from '../sys/nr.js';
import { F_SETPIPE_SZ, peekPipe } from '../sys/pipe.js';
import { describeHolders } from '../proc/files.js';
import { pipeKey } from './fd-shared.js';
import {
  callAsUser,
  reopen,
  reopenFlags,
  setStatusFlags,
  type FdBuilder,
  createAsUser,
  type FdInfo,
  type FdKind,
  type FilesRestoreContext,
} from './fd-kind.js';

const DEFAULT_CAPACITY = 65536;
/** Buffered bytes are written back in pieces of this size, each through scratch memory. */
const WRITE_CHUNK = 128 * 1024;

const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  pipe: integer(0, Number.MAX_SAFE_INTEGER),
  write: boolean,
  /** Only on the pipe's first descriptor in the tree: its capacity and buffered bytes (an image part). */
  capacity: integer(4096, 1 << 30),
  data: nullable(object({ part: string({ max: 256 }), size: integer(1, 1 << 30) })),
});
type PipeRecord = Infer<typeof record>;

const isWriteEnd = (info: FdInfo): boolean => (info.fdinfo.flags & O.ACCMODE) === O.WRONLY;

interface MadePipe {
  read: number;
  write: number;
}

/** Give a made pipe (or FIFO) the capacity and the bytes it had, written through `write`. */
function fill(
  ctx: FilesRestoreContext,
  fds: FdBuilder,
  write: number,
  rec: Pick<PipeRecord, 'capacity' | 'data'>,
): void {
  const remote = ctx.remote;
  if (rec.capacity !== DEFAULT_CAPACITY) {
    fds.call({ name: 'fcntl(F_SETPIPE_SZ)', nr: NR.fcntl, args: [write, F_SETPIPE_SZ, rec.capacity] });
  }
  if (!rec.data) return;
  fds.flush();
  const reader = ctx.source.openPart(rec.data.part);
  try {
    for (let done = 0; done < rec.data.size;) {
      const piece = reader.read(Math.min(WRITE_CHUNK, rec.data.size - done));
      remote.withData(() => {
        fds.call({ name: 'write(pipe)', nr: NR.write, args: [write, remote.put(piece), piece.length] });
        fds.flush();
      });
      done += piece.length;
    }
  } finally {
    reader.close();
  }
}

function makePipe(ctx: FilesRestoreContext, rec: PipeRecord, fds: FdBuilder): MadePipe {
  const out = ctx.remote.alloc(8);
  const [read, write] = fds.createPair({ name: 'pipe2', nr: NR.pipe2, args: [out, 0] }, out);
  fill(ctx, fds, write, rec);
  fds.lend(pipeKey(rec.pipe, false), read);
  fds.lend(pipeKey(rec.pipe, true), write);
  return { read, write };
}

/** A pipe an earlier process of the tree made: both its ends, when it lent them. */
function borrowPipe(rec: PipeRecord, fds: FdBuilder): MadePipe | undefined {
  const read = fds.borrow(pipeKey(rec.pipe, false));
  return read === undefined ? undefined : { read, write: fds.borrow(pipeKey(rec.pipe, true))! };
}

export const fdPipe: FdKind<'pipe', PipeRecord> = {
  kind: 'pipe',
  record,
  matches: (info) => info.target.startsWith('pipe:') && (info.fdinfo.flags & O.ACCMODE) !== O.RDWR,
  dump(ctx, info) {
    const ino = info.stat.ino;
    const base = { fd: info.fd, flags: info.fdinfo.flags, pipe: ino, write: isWriteEnd(info) };
    if (!ctx.tree.pipeEnd(ctx.pid, info, base.write))
      return { ...base, capacity: DEFAULT_CAPACITY, data: null };
    const { data, capacity } = peekPipe(`/proc/${ctx.pid}/fd/${info.fd}`);
    const part = `files/pipe-${ino}`;
    if (data.length > 0) ctx.writePart(part, data);
    return { ...base, capacity, data: data.length > 0 ? { part, size: data.length } : null };
  },
  restore(ctx, rec, fds) {
    const made = fds.shared(`pipe:${rec.pipe}`, () => borrowPipe(rec, fds) ?? makePipe(ctx, rec, fds));
    const end = rec.write ? made.write : made.read;
    setStatusFlags(fds, end, rec.flags);
    fds.place(rec.fd, end, rec.flags);
  },
};

const fifoRecord = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  path: string({ max: 4096 }),
  /** The FIFO's device and inode: its descriptors in the tree share its buffer. */
  fifo: string({ max: 64 }),
  /** Only on the FIFO's first descriptor in the tree, as for a pipe. */
  capacity: integer(4096, 1 << 30),
  data: nullable(object({ part: string({ max: 256 }), size: integer(1, 1 << 30) })),
  /** Of a FIFO whose path was deleted since it was opened: its mode; null otherwise (none before version 8). */
  deleted: nullable(integer(0, 0o7777)),
});
type FifoRecord = Infer<typeof fifoRecord>;

/** The key under which a deleted FIFO, made again by the first process of the tree, is lent. */
export const fifoKey = (fifo: string): string => `fifo:${fifo}`;
const S_IFIFO = 0o10000;

/**
 * FIFOs (named pipes): opened again by their path, with their buffered bytes, unless a process
 * outside the dump has the FIFO open (the bytes then stay in it). One whose path was deleted is made
 * again (mknod), opened and unlinked, and reached through the descriptor that keeps it. While a process's
 * descriptors are made, ferry keeps the FIFO open for reading and writing (O_RDWR, which never
 * waits), so that opening one end does not wait for the other; the bytes go in through it.
 */
export const fdFifo: FdKind<'fifo', FifoRecord> = {
  kind: 'fifo',
  record: fifoRecord,
  matches: (info) => info.stat.isFIFO() && info.target.startsWith('/'),
  dump(ctx, info) {
    const gone = info.target.endsWith(' (deleted)');
    const path = gone ? info.target.slice(0, -' (deleted)'.length) : info.target;
    const fifo = `${info.stat.dev}:${info.stat.ino}`;
    const deleted = gone ? info.stat.mode & 0o7777 : null;
    const base = { fd: info.fd, flags: info.fdinfo.flags, path, fifo };
    if (!ctx.tree.firstSeen(fifoKey(fifo)))
      return { ...base, capacity: DEFAULT_CAPACITY, data: null, deleted };
    const { data, capacity } = peekPipe(`/proc/${ctx.pid}/fd/${info.fd}`);
    // Open outside the dump too, the FIFO keeps its bytes once the process is gone: written in
    // again at restore, they would be read twice.
    const holders = ctx.tree.outsideHolders(info.target);
    if (holders.length > 0) {
      if (data.length > 0)
        ctx.warn(
          `fd ${info.fd}: the FIFO ${info.target} is open in ${describeHolders(holders)} too: its ${data.length} buffered bytes stay in it, not in the image`,
        );
      return { ...base, capacity, data: null, deleted };
    }
    const part = `files/fifo-${info.stat.ino}`;
    if (data.length > 0) ctx.writePart(part, data);
    return { ...base, capacity, data: data.length > 0 ? { part, size: data.length } : null, deleted };
  },
  restore(ctx, rec, fds) {
    const keeper = fds.shared(fifoKey(rec.fifo), () => {
      if (rec.deleted !== null) {
        const lent = fds.borrow(fifoKey(rec.fifo));
        if (lent !== undefined) return lent;
      }
      const at = rec.deleted === null ? rec.path : ghostFifo(ctx, fds, rec.path, rec.deleted);
      const made = createAsUser(ctx, fds, {
        name: `open(${at})`,
        nr: NR.openat,
        args: [AT_FDCWD, ctx.remote.putString(at), O.RDWR | O.NONBLOCK, 0],
      });
      if (rec.deleted !== null) {
        callAsUser(ctx, fds, { name: `unlink(${at})`, nr: NR.unlink, args: [ctx.remote.putString(at)] });
        fds.lend(fifoKey(rec.fifo), made);
      }
      fill(ctx, fds, made, rec);
      return made;
    });
    // A deleted FIFO is reached through the descriptor that keeps it.
    const path = rec.deleted === null ? rec.path : `/proc/self/fd/${keeper}`;
    reopen(ctx, fds, rec.fd, { path, flags: reopenFlags(rec.flags), pos: null });
  },
};

/**
 * Make a FIFO of `mode` again for one whose path was deleted: at that path if it is free and its
 * directory is there, else in the temporary directory; opened, then unlinked again, by the caller.
 */
function ghostFifo(ctx: FilesRestoreContext, fds: FdBuilder, path: string, mode: number): string {
  const at =
    existsSync(dirname(path)) && !existsSync(path)
      ? path
      : join(tmpdir(), `.ferry-fifo-${randomBytes(6).toString('hex')}`);
  callAsUser(ctx, fds, {
    name: `mknod(${at}, S_IFIFO)`,
    nr: NR.mknodat,
    args: [AT_FDCWD, ctx.remote.putString(at), S_IFIFO | mode, 0],
  });
  return at;
}
