// The Unix sockets of this network namespace, as the kernel's sock_diag netlink interface lists
// them: each one's type, state, bound name, peer, queued bytes, shutdown state and, of a listener,
// the connections waiting to be accepted. Nothing else tells a socket's
// peer (CRIU reads the same).
import { AF } from './socket.js';
import { attributes, sockDiagDump } from './sock-diag.js';

const UDIAG_SHOW = { NAME: 1, PEER: 4, ICONS: 8, RQLEN: 0x10 } as const;
const UNIX_DIAG = { NAME: 0, PEER: 2, ICONS: 3, RQLEN: 4, SHUTDOWN: 6 } as const;

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

/** struct unix_diag_req: every state, these attributes, no cookie. */
function request(): Buffer {
  const req = Buffer.alloc(24);
  req.writeUInt8(AF.UNIX, 0);
  req.writeUInt32LE(0xffffffff, 4); // every state
  req.writeUInt32LE(UDIAG_SHOW.NAME | UDIAG_SHOW.PEER | UDIAG_SHOW.ICONS | UDIAG_SHOW.RQLEN, 12);
  req.writeUInt32LE(0xffffffff, 16);
  req.writeUInt32LE(0xffffffff, 20);
  return req;
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
  for (const [type, data] of attributes(msg, 16)) {
    if (type === UNIX_DIAG.NAME) info.name = parseName(data);
    else if (type === UNIX_DIAG.PEER) info.peer = data.readUInt32LE(0);
    else if (type === UNIX_DIAG.SHUTDOWN) info.shutdown = data.readUInt8(0);
    else if (type === UNIX_DIAG.ICONS)
      for (let i = 0; i + 4 <= data.length; i += 4) info.icons.push(data.readUInt32LE(i));
    else if (type === UNIX_DIAG.RQLEN) {
      info.rqueue = data.readUInt32LE(0);
      info.wqueue = data.readUInt32LE(4);
    }
  }
  return info;
}

/** Every Unix socket of this network namespace, by inode. */
export function unixSockets(): Map<number, UnixSocketInfo> {
  return new Map(sockDiagDump(request(), 'AF_UNIX').map((msg) => [msg.readUInt32LE(4), parseSocket(msg)]));
}
