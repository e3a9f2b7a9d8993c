// Socket options, for Unix and IP sockets alike: read in ferry from a copy of the socket, kept where
// they differ from a new socket's of the same family, type and protocol (the only ones a program
// can have set), and set again by the restored process once its descriptors are in place. Buffer
// sizes are kept only where the program fixed them (SO_BUF_LOCK; else the kernel tunes them), and
// an attached classic BPF filter (SO_ATTACH_FILTER) with its lock. Options the dedicated records
// carry (SO_REUSEADDR, SO_REUSEPORT, SO_KEEPALIVE, TCP_NODELAY, IPV6_V6ONLY) are not repeated here.
import { closeSync } from 'node:fs';
import { array, base64, object, oneOf, type Infer } from '../image/schema.js';
import { isErrno } from '../sys/errno.js';
import { NR } from '../sys/nr.js';
import { AF, getSocketFilter, getsockopt, newSocket, SO, SOCK, SOL } from '../sys/socket.js';
import type { FdBuilder, FilesRestoreContext } from './fd-kind.js';

const SOL_IP = 0;

interface Option {
  level: number;
  opt: number;
  /** Bytes its value takes. */
  size: number;
  /** The families it applies to (all when absent); IP options also need stream `types`. */
  families?: readonly number[];
  types?: readonly number[];
}

const INET = [AF.INET, AF.INET6];
const PLAIN = {
  // First: setting the TOS or traffic class sets the priority too, which SO_PRIORITY then corrects.
  IP_TOS: { level: SOL_IP, opt: 1, size: 4, families: [AF.INET] },
  IP_TTL: { level: SOL_IP, opt: 2, size: 4, families: [AF.INET] },
  IPV6_UNICAST_HOPS: { level: SOL.IPV6, opt: 16, size: 4, families: [AF.INET6] },
  IPV6_TCLASS: { level: SOL.IPV6, opt: 67, size: 4, families: [AF.INET6] },
  SO_BROADCAST: { level: SOL.SOCKET, opt: 6, size: 4, families: INET },
  SO_OOBINLINE: { level: SOL.SOCKET, opt: 10, size: 4 },
  SO_PRIORITY: { level: SOL.SOCKET, opt: 12, size: 4 },
  SO_LINGER: { level: SOL.SOCKET, opt: 13, size: 8 },
  SO_PASSCRED: { level: SOL.SOCKET, opt: 16, size: 4 },
  SO_RCVLOWAT: { level: SOL.SOCKET, opt: 18, size: 4 },
  SO_RCVTIMEO: { level: SOL.SOCKET, opt: 20, size: 16 },
  SO_SNDTIMEO: { level: SOL.SOCKET, opt: 21, size: 16 },
  SO_BINDTODEVICE: { level: SOL.SOCKET, opt: 25, size: 16, families: INET },
  SO_TIMESTAMP: { level: SOL.SOCKET, opt: 29, size: 4 },
  SO_PASSSEC: { level: SOL.SOCKET, opt: 34, size: 4 },
  SO_MARK: { level: SOL.SOCKET, opt: 36, size: 4 },
  SO_RXQ_OVFL: { level: SOL.SOCKET, opt: 40, size: 4 },
  TCP_KEEPIDLE: { level: SOL.TCP, opt: 4, size: 4, families: INET, types: [SOCK.STREAM] },
  TCP_KEEPINTVL: { level: SOL.TCP, opt: 5, size: 4, families: INET, types: [SOCK.STREAM] },
  TCP_KEEPCNT: { level: SOL.TCP, opt: 6, size: 4, families: INET, types: [SOCK.STREAM] },
  TCP_USER_TIMEOUT: { level: SOL.TCP, opt: 18, size: 4, families: INET, types: [SOCK.STREAM] },
} as const satisfies Record<string, Option>;
type PlainName = keyof typeof PLAIN;
const plainOf = (name: string): Option | undefined => (PLAIN as Record<string, Option>)[name];
/** SO_BUF_LOCK (Linux 5.14): which buffer sizes the program fixed (1 send, 2 receive). */
const SO_BUF_LOCK = 72;
const SO_ATTACH_FILTER = 26;
const SO_LOCK_FILTER = 44;

const SPECIAL = ['SO_SNDBUF', 'SO_RCVBUF', 'SO_BUF_LOCK', 'SO_ATTACH_FILTER', 'SO_LOCK_FILTER'] as const;
export const SOCKET_OPTIONS: readonly (PlainName | (typeof SPECIAL)[number])[] = [
  ...(Object.keys(PLAIN) as PlainName[]),
  ...SPECIAL,
];
type SocketOptionName = (typeof SOCKET_OPTIONS)[number];

export const sockoptsRecord = array(
  object({
    name: oneOf(SOCKET_OPTIONS),
    /** The value as getsockopt gave it (a filter: its struct sock_filter instructions). */
    value: base64(4096 * 8),
  }),
  { max: 64 },
);
export type SockoptsRecord = Infer<typeof sockoptsRecord>;

/** Each plain option's value on a new socket of a kind, read once per dump. */
const defaults = new Map<string, Map<string, Buffer>>();

function read(fd: number, o: Option): Buffer | undefined {
  try {
    return getsockopt(fd, o.level, o.opt, o.size);
  } catch (err) {
    if (isErrno(err, 'ENOPROTOOPT', 'EINVAL', 'EOPNOTSUPP', 'ENOTSUP')) return undefined; // not for this socket
    throw err;
  }
}

function applies(o: Option, family: number, type: number): boolean {
  return (!o.families || o.families.includes(family)) && (!o.types || o.types.includes(type));
}

function defaultsOf(family: number, type: number, protocol: number): Map<string, Buffer> {
  const key = `${family}:${type}:${protocol}`;
  let values = defaults.get(key);
  if (values) return values;
  values = new Map();
  const fresh = newSocket(family, type, protocol);
  try {
    for (const [name, o] of Object.entries(PLAIN) as [string, Option][]) {
      const v = applies(o, family, type) ? read(fresh, o) : undefined;
      if (v) values.set(name, v);
    }
  } finally {
    closeSync(fresh);
  }
  defaults.set(key, values);
  return values;
}

/** An int option's value, as setsockopt takes it. */
export const int = (value: number): Buffer => {
  const buf = Buffer.alloc(4);
  buf.writeInt32LE(value);
  return buf;
};

/** The options of ferry's copy `fd` of a socket that differ from a new one's. */
export function dumpSockopts(fd: number, family: number, type: number, protocol: number): SockoptsRecord {
  const out: SockoptsRecord = [];
  const fresh = defaultsOf(family, type, protocol);
  for (const [name, o] of Object.entries(PLAIN) as [string, Option][]) {
    if (!applies(o, family, type)) continue;
    const value = read(fd, o);
    const was = fresh.get(name);
    if (value && was && !value.equals(was)) out.push({ name: name as SocketOptionName, value });
  }
  const lock = read(fd, { level: SOL.SOCKET, opt: SO_BUF_LOCK, size: 4 })?.readInt32LE(0) ?? 0;
  if (lock & 1) out.push({ name: 'SO_SNDBUF', value: getsockopt(fd, SOL.SOCKET, SO.SNDBUF) });
  if (lock & 2) out.push({ name: 'SO_RCVBUF', value: getsockopt(fd, SOL.SOCKET, SO.RCVBUF) });
  if (lock !== 0) out.push({ name: 'SO_BUF_LOCK', value: int(lock) });
  const filter = getSocketFilter(fd);
  if (filter) {
    out.push({ name: 'SO_ATTACH_FILTER', value: filter });
    const locked = read(fd, { level: SOL.SOCKET, opt: SO_LOCK_FILTER, size: 4 });
    if (locked && locked.readInt32LE(0) !== 0) out.push({ name: 'SO_LOCK_FILTER', value: locked });
  }
  return out;
}

/**
 * Set the options again on descriptor `fd` of the restored process, once every descriptor is in
 * place. A buffer size goes through SO_*BUFFORCE (the value read is twice what was asked for),
 * except for a restore made for a user, whose sizes the system's limits cap.
 */
export function restoreSockopts(
  ctx: FilesRestoreContext,
  fds: FdBuilder,
  fd: number,
  options: SockoptsRecord,
): void {
  const remote = ctx.remote;
  const set = (name: string, level: number, opt: number, value: Buffer | bigint, len: number): void =>
    fds.after({
      name: `setsockopt(${fd}, ${name})`,
      nr: NR.setsockopt,
      args: [fd, level, opt, typeof value === 'bigint' ? value : remote.put(value), len],
    });
  for (const { name, value } of options) {
    const plain = plainOf(name);
    if (plain) set(name, plain.level, plain.opt, value, value.length);
    else if (name === 'SO_SNDBUF' || name === 'SO_RCVBUF') {
      const send = name === 'SO_SNDBUF';
      const opt = ctx.user ? (send ? SO.SNDBUF : SO.RCVBUF) : send ? SO.SNDBUFFORCE : SO.RCVBUFFORCE;
      set(name, SOL.SOCKET, opt, int(Math.floor(value.readInt32LE(0) / 2)), 4);
    } else if (name === 'SO_BUF_LOCK') set(name, SOL.SOCKET, SO_BUF_LOCK, value, 4);
    else if (name === 'SO_ATTACH_FILTER') {
      // struct sock_fprog: the number of instructions, and where they are.
      const prog = Buffer.alloc(16);
      prog.writeUInt16LE(value.length / 8, 0);
      prog.writeBigUInt64LE(remote.put(value), 8);
      set(name, SOL.SOCKET, SO_ATTACH_FILTER, prog, 16);
    } else set(name, SOL.SOCKET, SO_LOCK_FILTER, value, 4);
  }
}

/** What a restore made for a user may not set (the kernel asks for CAP_NET_ADMIN or CAP_NET_RAW). */
export function privilegedSockopt(options: SockoptsRecord): string | undefined {
  for (const { name, value } of options) {
    if (name === 'SO_MARK' || name === 'SO_BINDTODEVICE') return name;
    if (name === 'SO_PRIORITY' && value.readInt32LE(0) > 6) return `SO_PRIORITY ${value.readInt32LE(0)}`;
  }
  return undefined;
}
