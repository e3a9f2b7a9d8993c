// Unix sockets: a connected pair (socketpair, or a connection accepted from a listener) whose ends
// are in the process or its tree, a socket bound to a name (a path, or an abstract '@name'),
// listening or not, and one connected to nothing. What the kernel says of each (its type, name and
// peer, sock_diag) and what its receive queue holds (peeked, so the process keeps it) are saved.
// Restore makes a pair with socketpair in the first process that holds an end, lends the ends to
// the others, and sends each end's queued messages again through its peer; a bound socket is bound
// again (a socket file left at its path by the dumped process is replaced) and listens again.
// A datagram socket connected to a named server is connected to that name again once every
// descriptor is in place; then its options and shutdown state are set again. A connection to a
// listener outside the tree is refused.
import { existsSync, lstatSync } from 'node:fs';
import { dirname } from 'node:path';
import { FerryError } from '../errors.js';
import { array, integer, nullable, object, string, type Infer } from '../image/schema.js';
import { NR } from '../sys/nr.js';
import { AF, peekQueue, SOCK } from '../sys/socket.js';
import { unixSockets } from '../sys/unix-diag.js';
import { unsupportedMessage } from './context.js';
import { dumpSockopts, restoreSockopts, sockoptsRecord } from './sockopts.js';
import { unixKey, unixPairId } from './fd-shared.js';
import {
  callAsUser,
  setStatusFlags,
  type FdBuilder,
  type FdKind,
  type FilesRestoreContext,
} from './fd-kind.js';

const LISTENING = 10;
const MAX_MESSAGES = 1 << 20;
const SUN_PATH = 108;

const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  ino: integer(0, 2 ** 32 - 1),
  type: integer(0, 16),
  peer: nullable(integer(0, 2 ** 32 - 1)),
  /** The name it is bound to (of a connected pair, not given back), and its socket file's mode. */
  name: nullable(string({ max: SUN_PATH })),
  mode: nullable(integer(0, 0o7777)),
  /** Of a listening socket, its backlog. */
  backlog: nullable(integer(0, 2 ** 31 - 1)),
  /** A datagram socket connected to a named one that is not connected back: that name. */
  connect: nullable(string({ max: SUN_PATH })),
  /** shutdown(2) state: 1 receive shut down, 2 send, 3 both. */
  shutdown: integer(0, 3),
  /** Options that differ from a new socket's (sockopts.ts). */
  options: sockoptsRecord,
  /** Its receive queue: the bytes (an image part) and each message's length. */
  queue: nullable(
    object({ part: string({ max: 256 }), lengths: array(integer(0, 1 << 30), { max: MAX_MESSAGES }) }),
  ),
});
type UnixRecord = Infer<typeof record>;

/** The descriptors made for one socket pair (or one lone socket), by socket inode. */
type Made = Map<number, number>;

/** struct sockaddr_un of a name: a path, or '@' and an abstract name. */
function sockaddr(name: string): Buffer {
  const abstract = name.startsWith('@');
  const path = Buffer.from(abstract ? `\0${name.slice(1)}` : `${name}\0`, abstract ? 'latin1' : 'utf8');
  const addr = Buffer.alloc(2 + path.length);
  addr.writeUInt16LE(AF.UNIX, 0);
  path.copy(addr, 2);
  return addr;
}

/** A socket of its own: bound to its name again (and listening) when it had one. */
function makeLone(ctx: FilesRestoreContext, rec: UnixRecord, fds: FdBuilder): number {
  const made = fds.create({ name: 'socket(AF_UNIX)', nr: NR.socket, args: [AF.UNIX, rec.type, 0] });
  if (rec.name === null) return made;
  const path = rec.name.startsWith('@') ? null : rec.name;
  // The dumped process's socket file is still there: binding needs the path free. One a live
  // socket is bound to (the dumped process ran on) is not taken from it.
  if ([...unixSockets().values()].some((s) => s.name === rec.name))
    throw new FerryError(
      'FERRY_RESTORE_FAILED',
      `${rec.name} is bound by a live socket: fd ${rec.fd} cannot have it`,
    );
  // Path calls go through the process, with its own file credentials for a restore made for a user:
  // the kernel checks them, whatever the path names by then (a symbolic link swapped in, say).
  const pathCall = (name: string, nr: number, at: string, ...args: (number | bigint)[]): void =>
    callAsUser(ctx, fds, { name: `${name}(${at})`, nr, args: [ctx.remote.putString(at), ...args] });
  if (path !== null && existsSync(path) && lstatSync(path).isSocket()) pathCall('unlink', NR.unlink, path);
  // A socket whose file was removed since (mode null) is bound again through directories made for
  // the while if they are gone too, then its file and those are removed again.
  const madeDirs: string[] = [];
  if (path !== null && rec.mode === null)
    for (let dir = dirname(path); !existsSync(dir); dir = dirname(dir)) madeDirs.unshift(dir);
  for (const dir of madeDirs) pathCall('mkdir', NR.mkdir, dir, 0o700);
  const addr = sockaddr(rec.name);
  callAsUser(ctx, fds, {
    name: `bind(${rec.name})`,
    nr: NR.bind,
    args: [made, ctx.remote.put(addr), addr.length],
  });
  if (rec.backlog !== null)
    fds.call({ name: `listen(${rec.name})`, nr: NR.listen, args: [made, rec.backlog] });
  if (path !== null && rec.mode !== null) pathCall('chmod', NR.chmod, path, rec.mode);
  if (path !== null && rec.mode === null) {
    pathCall('unlink', NR.unlink, path);
    for (const dir of [...madeDirs].reverse()) pathCall('rmdir', NR.rmdir, dir);
  }
  return made;
}

function makePair(ctx: FilesRestoreContext, rec: UnixRecord, fds: FdBuilder): Made {
  if (rec.peer === null) return new Map([[rec.ino, makeLone(ctx, rec, fds)]]);
  const out = ctx.remote.alloc(8);
  const [mine, theirs] = fds.createPair(
    { name: 'socketpair(AF_UNIX)', nr: NR.socketpair, args: [AF.UNIX, rec.type, 0, out] },
    out,
  );
  fds.lend(unixKey(rec.ino), mine);
  fds.lend(unixKey(rec.peer), theirs);
  return new Map([
    [rec.ino, mine],
    [rec.peer, theirs],
  ]);
}

/** The descriptor of socket `ino`: made here, or else borrowed from the earlier process that made it. */
function end(made: Made, ino: number, fds: FdBuilder): number | undefined {
  if (!made.has(ino)) {
    const borrowed = fds.borrow(unixKey(ino));
    if (borrowed !== undefined) made.set(ino, borrowed);
  }
  return made.get(ino);
}

/** Send the saved queue of `rec` again through its peer, message by message. */
function refill(ctx: FilesRestoreContext, rec: UnixRecord, through: number, fds: FdBuilder): void {
  const queue = rec.queue!;
  const reader = ctx.source.openPart(queue.part);
  try {
    fds.flush();
    for (const length of queue.lengths) {
      const message = reader.read(length);
      ctx.remote.withData(() => {
        fds.call({
          name: 'write(unix)',
          nr: NR.write,
          args: [through, ctx.remote.put(message), message.length],
        });
        fds.flush();
      });
    }
  } finally {
    reader.close();
  }
}

export const fdUnix: FdKind<'unix', UnixRecord> = {
  kind: 'unix',
  record,
  matches: (info) => info.socket?.family === AF.UNIX,
  dump(ctx, info) {
    const ino = info.stat.ino;
    const refuse = (what: string): never => {
      throw new FerryError(
        'FERRY_UNSUPPORTED_STATE',
        unsupportedMessage(
          ctx.pid,
          `fd ${info.fd} is ${what} (${info.target}),`,
          'which ferry cannot checkpoint yet',
        ),
      );
    };
    const s =
      ctx.tree.unixSocket(ino) ??
      refuse('a Unix socket the kernel does not list here (another network namespace?)');
    if (s.type !== SOCK.STREAM && s.type !== SOCK.DGRAM && s.type !== SOCK.SEQPACKET)
      refuse(`a Unix socket of type ${s.type}`);
    const listening = s.state === LISTENING;
    // Connections waiting to be accepted come back only from clients of the dump (`waiting` below).
    const dropped = listening ? s.icons.filter((client) => !ctx.tree.inDump(`socket:[${client}]`)).length : 0;
    if (dropped > 0)
      ctx.warn(
        `fd ${info.fd} (listening on ${s.name ?? '?'}): ${dropped} connection(s) not yet accepted, from processes outside the dump, are dropped`,
      );
    // A datagram socket connect()ed to a named one (a client of a syslog-like server) is not that
    // one's peer, nor is a connection waiting in a listener's accept queue its own: each is
    // connected again by name, once the listener is back, wherever it is.
    const waiting = s.type !== SOCK.DGRAM && s.peer !== null ? ctx.tree.listenerOf(ino) : undefined;
    if (waiting && (ctx.tree.unixSocket(s.peer!)?.rqueue ?? 0) > 0)
      refuse('a connection not yet accepted, with bytes sent into it');
    const server = s.type === SOCK.DGRAM && s.peer !== null ? ctx.tree.unixSocket(s.peer) : waiting;
    const oneWay = server !== undefined && (waiting !== undefined || server.peer !== ino);
    if (oneWay && server.name === null) refuse('a socket connected to an unnamed one');
    const peer = oneWay ? null : s.peer;
    ctx.tree.unixEnd(ctx.pid, info, peer);
    // A stream socket connected to nothing has no queue (and recv on it fails EINVAL).
    const queueless = listening || (s.peer === null && s.type !== SOCK.DGRAM);
    const { messages, control } = queueless ? { messages: [], control: false } : peekQueue(info.socket!.copy);
    if (control) refuse('a Unix socket with descriptors or credentials in flight in its queue (SCM_RIGHTS)');
    if (messages.length > 0 && peer === null) refuse('a Unix socket with data queued and no peer');
    const path = s.name !== null && !s.name.startsWith('@') && peer === null ? s.name : null;
    let queue: UnixRecord['queue'] = null;
    if (messages.length > 0) {
      const part = `files/unix-${ino}`;
      ctx.writePart(part, Buffer.concat(messages));
      queue = { part, lengths: messages.map((m) => m.length) };
    }
    return {
      fd: info.fd,
      flags: info.fdinfo.flags,
      ino,
      type: s.type,
      peer,
      name: s.name,
      mode: path !== null && existsSync(path) ? lstatSync(path).mode & 0o7777 : null,
      backlog: listening ? s.wqueue : null,
      connect: oneWay ? server.name : null,
      shutdown: s.shutdown,
      options: dumpSockopts(info.socket!.copy, AF.UNIX, s.type, 0),
      queue,
    };
  },
  restore(ctx, rec, fds) {
    const lent = ctx.tree.get(unixKey(rec.ino)) !== undefined;
    const made = fds.shared(unixPairId(rec.ino, rec.peer), () =>
      lent ? new Map<number, number>() : makePair(ctx, rec, fds),
    );
    const mine = end(made, rec.ino, fds)!;
    if (rec.queue) {
      const through = rec.peer === null ? undefined : end(made, rec.peer, fds);
      if (through === undefined)
        throw new FerryError('FERRY_IMAGE_CORRUPT', `fd ${rec.fd}: a queue saved for a socket with no peer`);
      refill(ctx, rec, through, fds);
    }
    setStatusFlags(fds, mine, rec.flags);
    fds.place(rec.fd, mine, rec.flags);
    // Once every descriptor is in place (its server bound, its peer's queue refilled).
    if (rec.connect !== null) {
      const addr = sockaddr(rec.connect);
      fds.after({
        name: `connect(${rec.fd}, ${rec.connect})`,
        nr: NR.connect,
        args: [rec.fd, ctx.remote.put(addr), addr.length],
      });
    }
    restoreSockopts(ctx, fds, rec.fd, rec.options);
    // SHUT_RD 0, SHUT_WR 1, SHUT_RDWR 2.
    if (rec.shutdown !== 0)
      fds.after({ name: `shutdown(${rec.fd})`, nr: NR.shutdown, args: [rec.fd, rec.shutdown - 1] });
  },
};
