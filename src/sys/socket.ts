// Socket options and addresses, read in ferry from a copy of a process's socket (pidfd_getfd).
import { syscall } from './call.js';
import { isErrno } from './errno.js';
import { addressOf } from './libc.js';
import { NR } from './nr.js';

export const AF = { UNIX: 1, INET: 2, INET6: 10 } as const;
export const SOCK = { STREAM: 1, DGRAM: 2, SEQPACKET: 5 } as const;
export const SOL = { SOCKET: 1, IPV6: 41, TCP: 6 } as const;
export const SO = {
  REUSEADDR: 2,
  TYPE: 3,
  SNDBUF: 7,
  RCVBUF: 8,
  KEEPALIVE: 9,
  REUSEPORT: 15,
  SNDBUFFORCE: 32,
  RCVBUFFORCE: 33,
  ACCEPTCONN: 30,
  PROTOCOL: 38,
  DOMAIN: 39,
  PEEK_OFF: 42,
} as const;
export const IPV6_V6ONLY = 26;
export const TCP_NODELAY = 1;
export const TCP_MAXSEG = 2;
export const TCP_INFO = 11;
/** TCP_REPAIR and its kin (Documentation/networking/tcp... and include/uapi/linux/tcp.h). */
export const TCP_REPAIR = 19;
export const TCP_REPAIR_QUEUE = 20;
export const TCP_QUEUE_SEQ = 21;
export const TCP_REPAIR_OPTIONS = 22;
export const TCP_TIMESTAMP = 24;
export const TCP_REPAIR_WINDOW = 29;
/** TCP_REPAIR_QUEUE values. */
export const TCP_QUEUE = { RECV: 1, SEND: 2 } as const;
/** Bytes in a socket's receive queue, in its send queue, and of those not sent yet. */
export const SIOCINQ = 0x541b;
export const SIOCOUTQ = 0x5411;
export const SIOCOUTQNSD = 0x894b;

const SOCKADDR_MAX = 128;

/** The host (dotted IPv4, or IPv6 in full hex words) and port of a raw struct sockaddr_in or _in6. */
export function sockaddrHost(addr: Buffer): { family: 'ip' | 'ip6'; host: string; port: number } {
  const port = addr.readUInt16BE(2);
  if (addr.readUInt16LE(0) === AF.INET)
    return { family: 'ip', host: [...addr.subarray(4, 8)].join('.'), port };
  const words = Array.from({ length: 8 }, (_, i) => addr.readUInt16BE(8 + i * 2).toString(16));
  return { family: 'ip6', host: words.join(':'), port };
}

/** getsockopt into a buffer of `size` bytes; the bytes the kernel wrote. */
export function getsockopt(fd: number, level: number, name: number, size = 4): Buffer {
  const value = Buffer.alloc(size);
  const length = new Uint32Array([size]);
  syscall(
    NR.getsockopt,
    'getsockopt',
    () => [String(fd), String(level), String(name)],
    fd,
    level,
    name,
    value,
    length,
  );
  return value.subarray(0, length[0]);
}

export function getsockoptInt(fd: number, level: number, name: number): number {
  return getsockopt(fd, level, name).readInt32LE(0);
}

function address(nr: number, call: string, fd: number): Buffer {
  const addr = Buffer.alloc(SOCKADDR_MAX);
  const length = new Uint32Array([SOCKADDR_MAX]);
  syscall(nr, call, () => [String(fd)], fd, addr, length);
  return addr.subarray(0, Math.min(length[0]!, SOCKADDR_MAX));
}

/** A new socket of ferry's (closed by the caller). */
export function newSocket(family: number, type: number, protocol: number): number {
  return syscall(
    NR.socket,
    'socket',
    () => [String(family), String(type), String(protocol)],
    family,
    type | 0o2000000,
    protocol,
  );
}

const SO_GET_FILTER = 26;

/**
 * The classic BPF filter attached to the socket (SO_ATTACH_FILTER), as its struct sock_filter
 * instructions, or null when none is. getsockopt's length counts instructions, not bytes.
 */
export function getSocketFilter(fd: number): Buffer | null {
  const count = new Uint32Array([0]);
  const ask = (buf: Buffer | null): void =>
    void syscall(
      NR.getsockopt,
      'getsockopt',
      () => [String(fd), 'SO_GET_FILTER'],
      fd,
      SOL.SOCKET,
      SO_GET_FILTER,
      buf,
      count,
    );
  ask(null);
  if (count[0] === 0) return null;
  const program = Buffer.alloc(count[0]! * 8);
  ask(program);
  return program.subarray(0, count[0]! * 8);
}

/** The address the socket is bound to (all zeros, port 0, when it is not). */
export function getsockname(fd: number): Buffer {
  return address(NR.getsockname, 'getsockname', fd);
}

/** The address the socket is connected to, or null when it is not connected. */
export function getpeername(fd: number): Buffer | null {
  try {
    return address(NR.getpeername, 'getpeername', fd);
  } catch (err) {
    if (isErrno(err, 'ENOTCONN')) return null;
    throw err;
  }
}

const MSG_PEEK = 2;
const MSG_DONTWAIT = 0x40;
const PEEK_BUFFER = 1 << 20;

export function setsockoptInt(fd: number, level: number, name: number, value: number): void {
  const buf = Buffer.alloc(4);
  buf.writeInt32LE(value);
  setsockopt(fd, level, name, buf);
}

export function setsockopt(fd: number, level: number, name: number, buf: Buffer): void {
  syscall(
    NR.setsockopt,
    'setsockopt',
    () => [String(fd), String(level), String(name)],
    fd,
    level,
    name,
    buf,
    buf.length,
  );
}

/** The first `len` bytes of the queue, read without taking them (MSG_PEEK); fewer if it holds fewer. */
export function peekBytes(fd: number, len: number): Buffer {
  const buf = Buffer.alloc(len);
  if (len === 0) return buf;
  const flags = MSG_PEEK | MSG_DONTWAIT;
  const got = syscall(NR.recvfrom, 'recvfrom(MSG_PEEK)', () => [String(fd)], fd, buf, len, flags, null, null);
  return buf.subarray(0, got);
}

/** recvmsg's msg_flags bit: control data (descriptors, credentials) did not fit, and was left. */
const MSG_CTRUNC = 8;

/**
 * What a socket's receive queue holds, read without taking it (MSG_PEEK, walking the queue with
 * SO_PEEK_OFF, which is put back after): each message, or for a stream socket its bytes in pieces;
 * and whether any carried control data (SCM_RIGHTS descriptors, SCM_CREDENTIALS), which this
 * reading leaves where it is (no room is given for it: the kernel says MSG_CTRUNC).
 */
export function peekQueue(fd: number): { messages: Buffer[]; control: boolean } {
  const saved = getsockoptInt(fd, SOL.SOCKET, SO.PEEK_OFF);
  setsockoptInt(fd, SOL.SOCKET, SO.PEEK_OFF, 0);
  const messages: Buffer[] = [];
  let control = false;
  try {
    const buf = Buffer.alloc(PEEK_BUFFER);
    const iov = Buffer.alloc(16);
    iov.writeBigUInt64LE(addressOf(buf), 0);
    iov.writeBigUInt64LE(BigInt(buf.length), 8);
    // struct msghdr: no name, one iovec, no control buffer; msg_flags at 48.
    const msg = Buffer.alloc(56);
    msg.writeBigUInt64LE(addressOf(iov), 16);
    msg.writeBigUInt64LE(1n, 24);
    for (;;) {
      let got: number;
      try {
        got = syscall(NR.recvmsg, 'recvmsg(MSG_PEEK)', () => [String(fd)], fd, msg, MSG_PEEK | MSG_DONTWAIT);
      } catch (err) {
        if (isErrno(err, 'EAGAIN')) return { messages, control };
        throw err;
      }
      if (msg.readInt32LE(48) & MSG_CTRUNC) control = true;
      if (got === 0) return { messages, control };
      messages.push(Buffer.from(buf.subarray(0, got)));
    }
  } finally {
    setsockoptInt(fd, SOL.SOCKET, SO.PEEK_OFF, saved);
  }
}
