// The kernel's sock_diag netlink interface: a dump request for one address family, and the
// messages it answers with, each a family's *_diag_msg and its attributes. unix-diag.ts and
// packet-diag.ts read their families through it (CRIU reads the same).
import { closeSync } from 'node:fs';
import { syscall } from './call.js';
import { SysError } from './errno.js';
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
const RECV_BUFFER = 1 << 16;

export const align4 = (n: number): number => (n + 3) & ~3;

/** Every message answering a dump request whose body (after the netlink header) is `body`. */
export function sockDiagDump(body: Buffer, what: string): Buffer[] {
  const fd = syscall(
    NR.socket,
    'socket(AF_NETLINK)',
    () => [],
    AF_NETLINK,
    SOCK_DGRAM_CLOEXEC,
    NETLINK_SOCK_DIAG,
  );
  const out: Buffer[] = [];
  try {
    const req = Buffer.alloc(NLMSG_HDR + body.length);
    req.writeUInt32LE(req.length, 0);
    req.writeUInt16LE(SOCK_DIAG_BY_FAMILY, 4);
    req.writeUInt16LE(NLM_F_REQUEST | NLM_F_DUMP, 6);
    body.copy(req, NLMSG_HDR);
    syscall(NR.write, 'write(sock_diag)', () => [], fd, req, req.length);
    const buf = Buffer.alloc(RECV_BUFFER);
    for (;;) {
      const got = syscall(NR.read, 'read(sock_diag)', () => [], fd, buf, buf.length);
      for (let at = 0; at + NLMSG_HDR <= got;) {
        const len = buf.readUInt32LE(at);
        const type = buf.readUInt16LE(at + 4);
        if (type === NLMSG_DONE) return out;
        if (type === NLMSG_ERROR) throw new SysError('sock_diag', [what], -buf.readInt32LE(at + NLMSG_HDR));
        if (type === SOCK_DIAG_BY_FAMILY) out.push(Buffer.from(buf.subarray(at + NLMSG_HDR, at + len)));
        if (len < NLMSG_HDR) return out;
        at += align4(len);
      }
      if (got === 0) return out;
    }
  } finally {
    closeSync(fd);
  }
}

/** Each attribute (type, data) of a message, from `offset` (the end of its fixed part). */
export function* attributes(msg: Buffer, offset: number): Generator<[type: number, data: Buffer]> {
  for (let at = offset; at + 4 <= msg.length;) {
    const len = msg.readUInt16LE(at);
    if (len < 4) return;
    yield [msg.readUInt16LE(at + 2), msg.subarray(at + 4, at + len)];
    at += align4(len);
  }
}
