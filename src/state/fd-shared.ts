// Descriptors the processes of a tree share: an open file one inherited from another (its offset and
// flags shared), pipes whose ends are in different processes, and shared anonymous memory.
// On dump, TreeFiles finds them across the processes dumped so far. On restore, TreeFds holds, in
// ferry, what one process made and a later one needs, until the tree is restored.
import { closeSync, openSync } from 'node:fs';
import { FerryError } from '../errors.js';
import { pidfdGetfd, pidfdOpen } from '../sys/pidfd.js';
import { sameOpenFile } from '../sys/kcmp.js';
import { NR } from '../sys/nr.js';
import type { RemoteCall } from '../tracee/remote.js';
import { unixSockets, type UnixSocketInfo } from '../sys/unix-diag.js';
import { describeHolders, fdTargets, holdersOf, type Holder } from '../proc/files.js';
import { unsupportedMessage } from './context.js';
import type { FdInfo } from './fd-kind.js';

interface Where {
  pid: number;
  fd: number;
}

interface PipeEnds extends Where {
  target: string;
  read: boolean;
  write: boolean;
}

export class TreeFiles {
  /** `pids`: the processes of the dump. */
  constructor(private readonly pids: readonly number[]) {}

  /** The processes outside the dump (not ferry) with a descriptor whose /proc link reads `target`. */
  outsideHolders(target: string): Holder[];
  /** The same for several targets at once (one scan of /proc). */
  outsideHolders(targets: ReadonlySet<string>): Map<string, Holder[]>;
  outsideHolders(targets: string | ReadonlySet<string>): Holder[] | Map<string, Holder[]> {
    const known = this.sharedOutside();
    const wanted = typeof targets === 'string' ? new Set([targets]) : targets;
    const missing = new Set([...wanted].filter((t) => !this.scanned.has(t)));
    if (missing.size > 0) {
      for (const [t, h] of this.scanOutside(missing)) known.set(t, h);
      for (const t of missing) this.scanned.add(t);
    }
    if (typeof targets === 'string') return known.get(targets) ?? [];
    return new Map([...wanted].flatMap((t) => (known.has(t) ? [[t, known.get(t)!] as const] : [])));
  }

  /** Who outside the dump (and outside ferry) holds each of `targets`: one walk of /proc. */
  private scanOutside(targets: ReadonlySet<string>): Map<string, Holder[]> {
    return holdersOf(targets, new Set([...this.pids, process.pid]));
  }

  /** What processes outside the dump hold of the targets looked up so far. */
  private outside: Map<string, Holder[]> | undefined;
  private readonly scanned = new Set<string>();

  /**
   * Every pipe of the dump's processes and every Unix socket peer of theirs that a process outside
   * holds, in one scan of /proc for the whole dump (its processes are frozen: their tables hold
   * still), rather than one per process.
   */
  private sharedOutside(): Map<string, Holder[]> {
    if (this.outside) return this.outside;
    const targets = new Set<string>();
    for (const target of this.treeTargets()) {
      if (target.startsWith('pipe:')) targets.add(target);
      const socket = /^socket:\[(\d+)\]$/.exec(target);
      const peer = socket && this.unixSocket(Number(socket[1]))?.peer;
      if (peer) targets.add(`socket:[${peer}]`);
    }
    this.outside = this.scanOutside(targets);
    for (const t of targets) this.scanned.add(t);
    return this.outside;
  }

  /** The ptys whose master a process of the dump holds, by index. */
  private readonly ptys = new Set<number>();

  addPtyMaster(index: number): void {
    this.ptys.add(index);
  }

  hasPtyMaster(index: number): boolean {
    return this.ptys.has(index);
  }

  /** One descriptor of each open file met so far, by inode. */
  private readonly files = new Map<string, Where[]>();
  private readonly pipes = new Map<number, PipeEnds>();
  private readonly seen = new Set<string>();
  /** Unix sockets met, by inode, with their peer's. */
  private readonly unix = new Map<number, Where & { target: string; peer: number | null }>();
  private table: Map<number, UnixSocketInfo> | undefined;

  /** What the kernel says of Unix socket `ino` (sock_diag, read once per dump). */
  unixSocket(ino: number): UnixSocketInfo | undefined {
    this.table ??= unixSockets();
    return this.table.get(ino);
  }

  /** Whether process `pid` is one of the dump's. */
  inTree(pid: number): boolean {
    return this.pids.includes(pid);
  }

  /** What the descriptors of the dump's processes are, as /proc links read (read once: they are frozen). */
  private targets: Set<string> | undefined;

  private treeTargets(): Set<string> {
    this.targets ??= new Set(this.pids.flatMap(fdTargets));
    return this.targets;
  }

  /** Whether a process of the dump has a descriptor whose /proc link reads `target`. */
  inDump(target: string): boolean {
    return this.treeTargets().has(target);
  }

  /** The listener whose accept queue holds a connection from client socket `ino`, if one does. */
  listenerOf(ino: number): UnixSocketInfo | undefined {
    this.table ??= unixSockets();
    for (const s of this.table.values()) if (s.icons.includes(ino)) return s;
    return undefined;
  }

  /** Note a Unix socket of the tree, connected to `peer` (or to nothing). */
  unixEnd(pid: number, info: FdInfo, peer: number | null): void {
    this.unix.set(info.stat.ino, { pid, fd: info.fd, target: info.target, peer });
  }

  /** The descriptor of an earlier process that is one open file with `fd` of `pid`. */
  earlier(pid: number, info: FdInfo): Where | undefined {
    return this.files
      .get(`${info.stat.dev}:${info.stat.ino}`)
      ?.find((w) => w.pid !== pid && sameOpenFile(w.pid, w.fd, pid, info.fd));
  }

  /** An open file met for the first time, at `fd` of `pid`. */
  add(pid: number, info: FdInfo): void {
    const key = `${info.stat.dev}:${info.stat.ino}`;
    this.files.set(key, [...(this.files.get(key) ?? []), { pid, fd: info.fd }]);
  }

  /** True the first time the tree meets `key` (a FIFO: the first holder saves its bytes). */
  firstSeen(key: string): boolean {
    if (this.seen.has(key)) return false;
    this.seen.add(key);
    return true;
  }

  /** Note one end of a pipe; true when the tree meets this pipe for the first time. */
  pipeEnd(pid: number, info: FdInfo, write: boolean): boolean {
    const seen = this.pipes.get(info.stat.ino);
    if (seen) {
      seen[write ? 'write' : 'read'] = true;
      return false;
    }
    this.pipes.set(info.stat.ino, { pid, fd: info.fd, target: info.target, read: !write, write });
    return true;
  }

  /**
   * A pipe is made again with the ends the tree holds: an end no process holds any more stays
   * closed (a reader then gets end of file, a writer EPIPE), but one a process outside the dump
   * holds is refused, naming that process: nothing here could give it back. So is a socket pair
   * whose other end is outside.
   */
  checkEnds(): void {
    const refuse = (w: Where, what: string, holder = ''): never => {
      throw new FerryError(
        'FERRY_UNSUPPORTED_STATE',
        unsupportedMessage(
          w.pid,
          `fd ${w.fd} is ${what}`,
          `whose other end a process outside the dump holds${holder}, which ferry cannot checkpoint`,
        ),
      );
    };
    const halves = [...this.pipes.values()].filter((p) => !(p.read && p.write));
    if (halves.length > 0) {
      const holders = this.outsideHolders(new Set(halves.map((p) => p.target)));
      for (const p of halves) {
        const h = holders.get(p.target);
        if (h) refuse(p, `one end of a pipe (${p.target})`, ` (${describeHolders(h)})`);
      }
    }
    for (const s of this.unix.values())
      if (s.peer !== null && !this.unix.has(s.peer)) refuse(s, `a connected Unix socket (${s.target})`);
  }
}

/** Key of the descriptor `fd` of the process dumped as `pid`, for the processes inheriting it. */
export const inheritedKey = (pid: number, fd: number): string => `fd:${pid}:${fd}`;
/**
 * Key of an object VMAs map and descriptors open across the tree (shared anonymous memory, a memfd,
 * a deleted file): its device and inode, as /proc/PID/maps shows them.
 */
export const shmemKey = (dev: string, inode: bigint): string => `shmem:${dev}:${inode.toString(16)}`;
/** Key of Unix socket `ino`, one end of a pair. */
export const unixKey = (ino: number): string => `unix:${ino}`;
/** What names a Unix socket pair (or a lone socket, `peer` null): the same from either end. */
export const unixPairId = (ino: number, peer: number | null): string =>
  `unix-pair:${Math.min(ino, peer ?? ino)}`;
/** Key of one end of pipe `ino`. */
export const pipeKey = (ino: number, write: boolean): string => `pipe:${ino}:${write ? 'write' : 'read'}`;

export class TreeFds {
  private readonly held = new Map<string, number>();

  /**
   * `wanted`: keys some later process of the tree will ask for. `shmem`: the size of each shared
   * anonymous memory object the tree maps, by key (shmemKey()).
   */
  constructor(
    private readonly wanted: ReadonlySet<string>,
    readonly shmem: ReadonlyMap<string, bigint> = new Map(),
  ) {}

  wants(key: string): boolean {
    return this.wanted.has(key);
  }

  /** Keep a copy of each descriptor `fd` of process `pid` (held by ferry, not running) under its key. */
  hold(pid: number, fds: readonly { key: string; fd: number }[]): void {
    if (fds.length === 0) return;
    const pidfd = pidfdOpen(pid);
    try {
      for (const { key, fd } of fds) this.held.set(key, pidfdGetfd(pidfd, fd));
    } finally {
      closeSync(pidfd);
    }
  }

  /** Keep the file at `path` open (read and write) under `key`: ferry's descriptor of it. */
  holdPath(key: string, path: string): number {
    const fd = openSync(path, 'r+');
    this.held.set(key, fd);
    return fd;
  }

  /** Hold descriptor `fd` of ferry's own (it is the tree's now: closed with the rest). */
  keep(key: string, fd: number): void {
    this.held.set(key, fd);
  }

  /** ferry's copy of what was held under `key`. */
  get(key: string): number | undefined {
    return this.held.get(key);
  }

  close(): void {
    for (const fd of this.held.values()) closeSync(fd);
    this.held.clear();
  }
}

/** The call that opens ferry's own process inside a stub (a pidfd), to borrow held descriptors through. */
export const ferryPidfdCall = (): RemoteCall => ({
  name: 'pidfd_open(ferry)',
  nr: NR.pidfd_open,
  args: [process.pid, 0],
});

/** The call that copies ferry's held descriptor `held` into a stub, through `ferry` (ferryPidfdCall). */
export const borrowCall = (ferry: number, held: number, what: string): RemoteCall => ({
  name: `pidfd_getfd(${what})`,
  nr: NR.pidfd_getfd,
  args: [ferry, held, 0],
});
