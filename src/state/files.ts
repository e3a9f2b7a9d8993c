// The descriptor table. One registry lists the kinds of descriptor ferry can save; anything else is
// refused at dump time, naming the descriptor and what it is.
import { closeSync, readdirSync, statSync } from 'node:fs';
import { FerryError } from '../errors.js';
import { array, integer, object, tagged, type Infer } from '../image/schema.js';
import { parseFdinfo } from '../proc/fdinfo.js';
import { describeHolders, listProcDir, procError, readProcLink, readProcText } from '../proc/files.js';
import { NR } from '../sys/nr.js';
import { sameOpenFile } from '../sys/kcmp.js';
import { pidfdGetfd, pidfdOpen } from '../sys/pidfd.js';
import { AF, getsockoptInt, SO, SOL } from '../sys/socket.js';
import type { RemoteCall, RemoteSyscalls } from '../tracee/remote.js';
import { expectFd, unsupportedMessage, type DumpContext } from './context.js';
import { fdChardev } from './fd-chardev.js';
import { fdEpoll } from './fd-epoll.js';
import { fdExternal } from './fd-external.js';
import { fdEventfd } from './fd-eventfd.js';
import { fdFile } from './fd-file.js';
import {
  major,
  minor,
  type FdBuilder,
  type FdInfo,
  type FilesDumpContext,
  type FilesRestoreContext,
} from './fd-kind.js';
import { O } from '../sys/fcntl.js';
import { fdMemfd } from './fd-memfd.js';
import { fdFifo, fdPipe, fifoKey } from './fd-pipe.js';
import {
  borrowCall,
  ferryPidfdCall,
  inheritedKey,
  pipeKey,
  unixKey,
  unixPairId,
  type TreeFds,
  type TreeFiles,
} from './fd-shared.js';
import { fdSocket } from './fd-socket.js';
import { fdInotify } from './fd-inotify.js';
import { fdFanotify } from './fd-fanotify.js';
import { fdPacket } from './fd-packet.js';
import { fdSignalfd } from './fd-signalfd.js';
import { fdTimerfd } from './fd-timerfd.js';
import { fdTty } from './fd-tty.js';
import { fdPty, ptyKey } from './fd-pty.js';
import { fdUnix } from './fd-unix.js';
import { dumpLocks, type LocksRecord } from './locks.js';

/** Every kind of descriptor ferry saves, tried in this order. */
export const FD_KINDS = [
  fdExternal,
  fdTty,
  fdPty,
  fdChardev,
  fdFile,
  fdMemfd,
  fdPipe,
  fdFifo,
  fdEventfd,
  fdEpoll,
  fdSocket,
  fdTimerfd,
  fdSignalfd,
  fdInotify,
  fdFanotify,
  fdPacket,
  fdUnix,
] as const;

type Kinds = (typeof FD_KINDS)[number];
type Variants = { [K in Kinds as K['kind']]: K['record'] };

/** A descriptor that shares the open file of a lower one (dup, inheritance): placed from it. */
const dupRecord = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  of: integer(0, 1 << 20),
});

/** A descriptor that shares the open file of fd `of` of process `pid`, earlier in the image. */
const inheritRecord = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  pid: integer(1, 2 ** 22),
  of: integer(0, 1 << 20),
});

export const filesRecord = array(
  tagged('kind', {
    ...(Object.fromEntries(FD_KINDS.map((k) => [k.kind, k.record])) as Variants),
    dup: dupRecord,
    inherit: inheritRecord,
  }),
  { max: 1 << 20 },
);
export type FilesRecord = Infer<typeof filesRecord>;
export type FdRecord = FilesRecord[number];

/** What an unsupported descriptor is, in words. */
function describeFd(info: FdInfo): string {
  const anon = /^anon_inode:\[?([^\]]+)\]?$/.exec(info.target);
  if (anon) return `an ${anon[1]} descriptor (${info.target})`;
  if (info.target.startsWith('pipe:')) return `a pipe (${info.target})`;
  if (info.socket) return `a socket of address family ${info.socket.family} (${info.target})`;
  if (info.target.startsWith('/memfd:')) return `a memfd (${info.target})`;
  if (info.stat.isFIFO()) return `a FIFO (${info.target})`;
  if (info.stat.isCharacterDevice()) {
    return `the character device ${info.target} (${major(info.stat.rdev)}:${minor(info.stat.rdev)}), whose state ferry cannot save`;
  }
  if (info.stat.isBlockDevice()) return `the block device ${info.target}`;
  return `${info.target}`;
}

/** ferry's copies of a frozen process's sockets (pidfd_getfd), to read them through. */
class SocketCopies {
  private pidfd: number | undefined;
  private readonly copies: number[] = [];

  constructor(private readonly pid: number) {}

  take(fd: number): { family: number; copy: number } {
    this.pidfd ??= pidfdOpen(this.pid);
    const copy = pidfdGetfd(this.pidfd, fd);
    this.copies.push(copy);
    return { family: getsockoptInt(copy, SOL.SOCKET, SO.DOMAIN), copy };
  }

  close(): void {
    for (const fd of [...this.copies.splice(0), ...(this.pidfd === undefined ? [] : [this.pidfd])])
      closeSync(fd);
    this.pidfd = undefined;
  }
}

function fdInfo(pid: number, fd: number, sockets: SocketCopies): FdInfo {
  const target = readProcLink(pid, `fd/${fd}`);
  let stat;
  try {
    stat = statSync(`/proc/${pid}/fd/${fd}`);
  } catch (err) {
    return procError(pid, `fd/${fd}`, err);
  }
  return {
    fd,
    target,
    stat,
    fdinfo: parseFdinfo(readProcText(pid, `fdinfo/${fd}`), `/proc/${pid}/fdinfo/${fd}`),
    socket: target.startsWith('socket:') ? sockets.take(fd) : null,
    outside: null,
  };
}

/**
 * Mark the descriptors whose pipe, or whose Unix socket's peer, a process outside the dump holds
 * (one scan of /proc for all of them). A migration takes none: they are left for TreeFiles to refuse.
 */
function markOutside(ctx: DumpContext, tree: TreeFiles, infos: FdInfo[]): void {
  if (ctx.migrating) return;
  const wanted = new Map<FdInfo, string>();
  for (const info of infos) {
    if (info.target.startsWith('pipe:')) wanted.set(info, info.target);
    else if (info.socket?.family === AF.UNIX) {
      const peer = tree.unixSocket(info.stat.ino)?.peer;
      if (peer) wanted.set(info, `socket:[${peer}]`);
    }
  }
  if (wanted.size === 0) return;
  const holders = tree.outsideHolders(new Set(wanted.values()));
  for (const [info, target] of wanted) {
    const h = holders.get(target);
    if (h) info.outside = describeHolders(h);
  }
}

/**
 * Pairs of descriptors that are one open file, later one -> earlier one. Only descriptors on the
 * same inode can be, so only those are compared.
 */
function duplicates(pid: number, infos: readonly FdInfo[]): Map<number, number> {
  const byInode = new Map<string, number[]>();
  for (const info of infos) {
    const key = `${info.stat.dev}:${info.stat.ino}`;
    byInode.set(key, [...(byInode.get(key) ?? []), info.fd]);
  }
  const of = new Map<number, number>();
  for (const fds of byInode.values()) {
    for (let i = 1; i < fds.length; i++) {
      const first = fds.slice(0, i).find((f) => !of.has(f) && sameOpenFile(pid, f, pid, fds[i]!));
      if (first !== undefined) of.set(fds[i]!, first);
    }
  }
  return of;
}

/**
 * The descriptor table of a frozen process. `tree` knows the open files of the processes of its
 * tree dumped before: one this process shares is saved as inherited from there.
 */
export function dumpFiles(ctx: DumpContext, tree: TreeFiles): { files: FilesRecord; locks: LocksRecord } {
  const numbers = listProcDir(ctx.pid, 'fd')
    .map(Number)
    .filter((fd) => !ctx.trackerFds.includes(fd))
    .sort((a, b) => a - b);
  const sockets = new SocketCopies(ctx.pid);
  try {
    const infos = numbers.map((fd) => fdInfo(ctx.pid, fd, sockets));
    markOutside(ctx, tree, infos);
    const files = dumpTable(ctx, tree, infos);
    const shared = new Set(files.filter((r) => r.kind === 'dup' || r.kind === 'inherit').map((r) => r.fd));
    return { files, locks: dumpLocks(ctx, infos, (fd) => shared.has(fd)) };
  } finally {
    sockets.close();
  }
}

function dumpTable(ctx: DumpContext, tree: TreeFiles, infos: FdInfo[]): FilesRecord {
  const fctx: FilesDumpContext = { ...ctx, fds: new Map(infos.map((i) => [i.fd, i])), tree };
  const dups = duplicates(ctx.pid, infos);
  return infos.map((info) => {
    const flags = info.fdinfo.flags;
    const of = dups.get(info.fd);
    if (of !== undefined) return { kind: 'dup', fd: info.fd, flags, of };
    const earlier = tree.earlier(ctx.pid, info);
    if (earlier) return { kind: 'inherit', fd: info.fd, flags, pid: earlier.pid, of: earlier.fd };
    tree.add(ctx.pid, info);
    const kind = FD_KINDS.find((k) => k.matches(info));
    if (!kind) {
      throw new FerryError(
        'FERRY_UNSUPPORTED_STATE',
        unsupportedMessage(
          ctx.pid,
          `fd ${info.fd} is`,
          `${describeFd(info)}, which ferry cannot checkpoint yet`,
        ),
      );
    }
    return { kind: kind.kind, ...kind.dump(fctx, info) } as FdRecord;
  });
}

/** The stub's side of FdBuilder: parks made descriptors at `top` and up, then places them. */
class Builder implements FdBuilder {
  private pending: RemoteCall[] = [];
  private readonly checks: { call: number; fd: number; what: string }[] = [];
  private readonly pairs: { out: bigint; fds: [number, number]; what: string }[] = [];
  private readonly placements: RemoteCall[] = [];
  private readonly afters: RemoteCall[] = [];
  private readonly parked: number[] = [];
  private readonly made = new Map<string, unknown>();
  /** Where each placed descriptor was made (for the dup records placed from it). */
  readonly madeFor = new Map<number, number>();

  private readonly lent: { key: string; fd: number }[] = [];
  /** ferry's process, opened in the stub to borrow from (a pidfd), once something is borrowed. */
  private ferry: number | undefined;

  constructor(
    private readonly remote: RemoteSyscalls,
    private readonly tree: TreeFds,
    /** Descriptors the stub has open: new ones come at the lowest number not among them. */
    private readonly open: ReadonlySet<number>,
    private next: number,
  ) {}

  private free(count: number): number[] {
    const out: number[] = [];
    for (let fd = 0; out.length < count; fd++) if (!this.open.has(fd)) out.push(fd);
    return out;
  }

  private park(tmp: number): number {
    const at = this.next++;
    this.parked.push(at);
    this.pending.push(
      { name: `dup3(${tmp}, ${at})`, nr: NR.dup3, args: [tmp, at, 0] },
      { name: `close(${tmp})`, nr: NR.close, args: [tmp] },
    );
    return at;
  }

  create(call: RemoteCall): number {
    const [tmp] = this.free(1) as [number];
    this.checks.push({ call: this.pending.length, fd: tmp, what: call.name });
    this.pending.push(call);
    return this.park(tmp);
  }

  createPair(call: RemoteCall, out: bigint): [number, number] {
    const [a, b] = this.free(2) as [number, number];
    this.pending.push(call);
    this.pairs.push({ out, fds: [a, b], what: call.name });
    return [this.park(a), this.park(b)];
  }

  call(call: RemoteCall): void {
    this.pending.push(call);
  }

  flush(): void {
    const base = this.pending;
    this.pending = [];
    const results = this.remote.batch(base);
    for (const c of this.checks.splice(0)) expectFd(results[c.call], c.fd, c.what);
    for (const p of this.pairs.splice(0)) {
      const got = this.remote.read(p.out, 8);
      expectFd(BigInt(got.readInt32LE(0)), p.fds[0], p.what);
      expectFd(BigInt(got.readInt32LE(4)), p.fds[1], p.what);
    }
  }

  shared<T>(key: string, make: () => T): T {
    if (!this.made.has(key)) this.made.set(key, make());
    return this.made.get(key) as T;
  }

  lend(key: string, made: number): void {
    if (this.tree.wants(key)) this.lent.push({ key, fd: made });
  }

  borrow(key: string): number | undefined {
    const held = this.tree.get(key);
    if (held === undefined) return undefined;
    this.ferry ??= this.create(ferryPidfdCall());
    return this.create(borrowCall(this.ferry, held, key));
  }

  place(fd: number, made: number, flags: number): void {
    this.madeFor.set(fd, made);
    this.placements.push({ name: `dup3(${made}, ${fd})`, nr: NR.dup3, args: [made, fd, flags & O.CLOEXEC] });
  }

  after(call: RemoteCall): void {
    this.afters.push(call);
  }

  spare(): number {
    return this.next++; // above every parked descriptor, which are closed before after() calls run
  }

  /**
   * Hand ferry what later processes borrow, place every descriptor, close the parked ones, then
   * run what waited for the placing.
   */
  finish(): void {
    this.flush();
    this.tree.hold(this.remote.pid, this.lent);
    this.pending.push(
      ...this.placements,
      ...this.parked.map((fd) => ({ name: `close(${fd})`, nr: NR.close, args: [fd] })),
      ...this.afters,
    );
    this.flush();
  }
}

function kindOf(rec: Exclude<FdRecord, { kind: 'dup' | 'inherit' }>): Kinds {
  return FD_KINDS.find((k) => k.kind === rec.kind)!;
}

/**
 * Give the stub every descriptor, at its number: each kind makes its descriptors (kept above every
 * saved number meanwhile), then all are moved to their numbers and what needs them in place runs.
 */
export function restoreFiles(ctx: FilesRestoreContext, recs: FilesRecord): void {
  const open = new Set(readdirSync(`/proc/${ctx.pid}/fd`).map(Number));
  const top = Math.max(-1, ...open, ...recs.map((r) => r.fd)) + 1;
  const fds = new Builder(ctx.remote, ctx.tree, open, top);
  ctx.remote.withData(() => {
    for (const rec of [...recs].sort((a, b) => a.fd - b.fd)) {
      if (rec.kind === 'inherit') {
        const made = fds.borrow(inheritedKey(rec.pid, rec.of));
        if (made === undefined)
          throw new FerryError(
            'FERRY_IMAGE_CORRUPT',
            `fd ${rec.fd} shares the file of fd ${rec.of} of process ${rec.pid}, which the image lacks`,
          );
        fds.place(rec.fd, made, rec.flags);
        continue;
      }
      if (rec.kind === 'dup') {
        const made = fds.madeFor.get(rec.of);
        if (made === undefined)
          throw new FerryError(
            'FERRY_IMAGE_CORRUPT',
            `fd ${rec.fd} shares the file of fd ${rec.of}, which the image lacks`,
          );
        fds.place(rec.fd, made, rec.flags);
        continue;
      }
      (kindOf(rec).restore as (c: FilesRestoreContext, r: FdRecord, b: FdBuilder) => void)(ctx, rec, fds);
    }
    for (const [fd, made] of fds.madeFor) fds.lend(inheritedKey(ctx.originalPid, fd), made);
    fds.finish();
  });
}

/**
 * The descriptors the processes of a tree will borrow from one another: those some process
 * inherits, and both ends of pipes that more than one process holds.
 */
export function borrowedFds(processes: readonly { pid: number; files: FilesRecord }[]): Set<string> {
  const wanted = new Set<string>();
  /** The processes holding each pipe, each socket pair: lent when more than one does. */
  const holders = new Map<string, { pids: Set<number>; keys: string[] }>();
  const hold = (id: string, pid: number, keys: string[]): void => {
    const h = holders.get(id) ?? { pids: new Set(), keys };
    holders.set(id, h);
    h.pids.add(pid);
  };
  for (const p of processes) {
    for (const rec of p.files) {
      if (rec.kind === 'inherit') wanted.add(inheritedKey(rec.pid, rec.of));
      if (rec.kind === 'tty' && rec.pty !== null) wanted.add(ptyKey(rec.pty));
      if (rec.kind === 'pipe')
        hold(`pipe:${rec.pipe}`, p.pid, [pipeKey(rec.pipe, false), pipeKey(rec.pipe, true)]);
      if (rec.kind === 'fifo' && rec.deleted !== null) hold(fifoKey(rec.fifo), p.pid, [fifoKey(rec.fifo)]);
      if (rec.kind === 'unix' && rec.peer !== null)
        hold(unixPairId(rec.ino, rec.peer), p.pid, [unixKey(rec.ino), unixKey(rec.peer)]);
    }
  }
  for (const h of holders.values()) if (h.pids.size > 1) for (const key of h.keys) wanted.add(key);
  return wanted;
}
