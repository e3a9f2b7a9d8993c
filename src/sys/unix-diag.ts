// The Unix sockets of this network namespace, as the kernel's sock_diag netlink interface lists
// them: each one's type, state, bound name, peer, queued bytes, shutdown state and, of a listener,
// the connections waiting to be accepted. Nothing else tells a socket's
// peer (CRIU reads the same).
import { closeSync } from 'node:fs';
import { syscall } from './call.js';
import { SysError } from './errno.js';
import { AF } from './socket.js';
import { NR } from './nr.js';

const AF_NETLINK = 16;
const SOCK_DGRAM_CLOEXEC = 2 | 0o2000000;
const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST = 1;
const NLM_F_DUMP = 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLMSG_HDR = 16;
const UDIAG_SHOW = { NAME: 1, PEER: 4, ICONS: 8, RQLEN: 0x10 } as const;
const UNIX_DIAG = { NAME: 0, PEER: 2, ICONS: 3, RQLEN: 4, SHUTDOWN: 6 } as const;
const RECV_BUFFER = 1 << 16;

export interface UnixSocketInfo {
  ino: number;
  /** SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5. */
  type: number;
  /** TCP-like state: 1 established, 7 unconnected, 10 listening. */
  state: number;
  /** The bound name (a path, or '@...' for an abstract one), or null. */
  name: string | null;
  /** The peer's inode, or null. */
  peer: number | null;
  /** Bytes in its receive queue (of a listener: connections waiting). */
  rqueue: number;
  /** Of a listener: its backlog. */
  wqueue: number;
  /** shutdown(2) state: 1 receive shut down, 2 send, 3 both. */
  shutdown: number;
  /** Of a listener: the sockets of the connections waiting in its accept queue. */
  icons: number[];
}

const align4 = (n: number): number => (n + 3) & ~3;

function request(): Buffer {
  const msg = Buffer.alloc(NLMSG_HDR + 24);
  msg.writeUInt32LE(msg.length, 0);
  msg.writeUInt16LE(SOCK_DIAG_BY_FAMILY, 4);
  msg.writeUInt16LE(NLM_F_REQUEST | NLM_F_DUMP, 6);
  msg.writeUInt8(AF.UNIX, NLMSG_HDR);
  msg.writeUInt32LE(0xffffffff, NLMSG_HDR + 4); // every state
  msg.writeUInt32LE(UDIAG_SHOW.NAME | UDIAG_SHOW.PEER | UDIAG_SHOW.ICONS | UDIAG_SHOW.RQLEN, NLMSG_HDR + 12);
  msg.writeUInt32LE(0xffffffff, NLMSG_HDR + 16); // no cookie
  msg.writeUInt32LE(0xffffffff, NLMSG_HDR + 20);
  return msg;
}

function parseName(data: Buffer): string {
  if (data.length > 0 && data[0] === 0) return `@${data.subarray(1).toString('latin1')}`;
  return data.toString('utf8').replace(/\0.*$/s, '');
}

/** One unix_diag_msg and its attributes. */
function parseSocket(msg: Buffer): UnixSocketInfo {
  const info: UnixSocketInfo = {
    ino: msg.readUInt32LE(4),
    type: msg.readUInt8(1),
    state: msg.readUInt8(2),
    name: null,
    peer: null,
    rqueue: 0,
    wqueue: 0,
    shutdown: 0,
    icons: [],
  };
  for (let at = 16; at + 4 <= msg.length;) {
    const len = msg.readUInt16LE(at);
    if (len < 4) break;
    const data = msg.subarray(at + 4, at + len);
    const type = msg.readUInt16LE(at + 2);
    if (type === UNIX_DIAG.NAME) info.name = parseName(data);
    else if (type === UNIX_DIAG.PEER) info.peer = data.readUInt32LE(0);
    else if (type === UNIX_DIAG.SHUTDOWN) info.shutdown = data.readUInt8(0);
    else if (type === UNIX_DIAG.ICONS)
      for (let i = 0; i + 4 <= data.length; i += 4) info.icons.push(data.readUInt32LE(i));
    else if (type === UNIX_DIAG.RQLEN) {
      info.rqueue = data.readUInt32LE(0);
      info.wqueue = data.readUInt32LE(4);
    }
    at += align4(len);
  }
  return info;
}

/** Every Unix socket of this network namespace, by inode. */
export function unixSockets(): Map<number, UnixSocketInfo> {
  const fd = syscall(
    NR.socket,
    'socket(AF_NETLINK)',
    () => [],
    AF_NETLINK,
    SOCK_DGRAM_CLOEXEC,
    NETLINK_SOCK_DIAG,
  );
  const out = new Map<number, UnixSocketInfo>();
  try {
    const req = request();
    syscall(NR.write, 'write(sock_diag)', () => [], fd, req, req.length);
    const buf = Buffer.alloc(RECV_BUFFER);
    for (;;) {
      const got = syscall(NR.read, 'read(sock_diag)', () => [], fd, buf, buf.length);
      for (let at = 0; at + NLMSG_HDR <= got;) {
        const len = buf.readUInt32LE(at);
        const type = buf.readUInt16LE(at + 4);
        if (type === NLMSG_DONE) return out;
        if (type === NLMSG_ERROR)
          throw new SysError('sock_diag', ['AF_UNIX'], -buf.readInt32LE(at + NLMSG_HDR));
        if (type === SOCK_DIAG_BY_FAMILY) {
          const s = parseSocket(buf.subarray(at + NLMSG_HDR, at + len));
          out.set(s.ino, s);
        }
        if (len < NLMSG_HDR) return out;
        at += align4(len);
      }
      if (got === 0) return out;
    }
  } finally {
    closeSync(fd);
  }
}
