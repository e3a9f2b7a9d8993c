// TCP and UDP sockets (IPv4 and IPv6) that are unbound, bound or listening, UDP sockets with a
// default peer, and established TCP connections when the dump asks for them (fd-tcp.ts): made
// again with socket, their options (sockopts.ts), bind, listen and connect. Their state is read in ferry from a
// copy of the socket (pidfd_getfd). TCP connections in other states are refused.
import { FerryError } from '../errors.js';
import { base64, boolean, integer, nullable, object, type Infer } from '../image/schema.js';
import { NR } from '../sys/nr.js';
import {
  AF,
  getpeername,
  getsockname,
  getsockopt,
  getsockoptInt,
  IPV6_V6ONLY,
  SO,
  SOCK,
  SOL,
  sockaddrHost,
  TCP_INFO,
  TCP_NODELAY,
} from '../sys/socket.js';
import { unsupportedMessage } from './context.js';
import { setStatusFlags, type FdKind, type FilesDumpContext } from './fd-kind.js';
import { dumpSockopts, restoreSockopts, sockoptsRecord } from './sockopts.js';
import { dumpTcp, repairAfterConnect, repairBeforeConnect, tcpRecord } from './fd-tcp.js';

const TCP_ESTABLISHED = 1;
const TCP_LISTEN = 10;
const TCP_CLOSE = 7;
const TCP_STATES = [
  '',
  'ESTABLISHED',
  'SYN_SENT',
  'SYN_RECV',
  'FIN_WAIT1',
  'FIN_WAIT2',
  'TIME_WAIT',
  'CLOSE',
  'CLOSE_WAIT',
  'LAST_ACK',
  'LISTEN',
  'CLOSING',
];
/** struct tcp_info: of a listener, tcpi_unacked is its accept queue and tcpi_sacked its backlog. */
const TCPI_UNACKED = 24;
const TCPI_SACKED = 28;

const sockaddr = base64(128);
const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  family: integer(0, 64),
  type: integer(0, 16),
  protocol: integer(0, 255),
  /** getsockname: port 0 when unbound. */
  address: sockaddr,
  peer: nullable(sockaddr),
  backlog: nullable(integer(0, 2 ** 31 - 1)),
  reuseaddr: boolean,
  reuseport: boolean,
  keepalive: boolean,
  nodelay: boolean,
  v6only: boolean,
  /** Other options that differ from a new socket's (sockopts.ts); none before version 8. */
  options: sockoptsRecord,
  /** An established connection's state (--tcp-established), else null. */
  tcp: nullable(tcpRecord),
});
type SocketRecord = Infer<typeof record>;

/** "127.0.0.1:6379" or "[::1]:6379". */
export function formatSockaddr(addr: Buffer): string {
  const { family, host, port } = sockaddrHost(addr);
  return family === 'ip' ? `${host}:${port}` : `[${host.replace(/(^|:)0(:0)+(:|$)/, '::')}]:${port}`;
}

const port = (addr: Buffer): number => addr.readUInt16BE(2);

/** Read the socket's state from `copy`, a descriptor of ferry's on it. */
function readSocket(ctx: FilesDumpContext, fd: number, copy: number, flags: number): SocketRecord {
  const refuse = (what: string, why = 'which ferry cannot checkpoint yet'): never => {
    throw new FerryError('FERRY_UNSUPPORTED_STATE', unsupportedMessage(ctx.pid, `fd ${fd} is ${what},`, why));
  };
  const family = getsockoptInt(copy, SOL.SOCKET, SO.DOMAIN);
  const type = getsockoptInt(copy, SOL.SOCKET, SO.TYPE);
  const protocol = getsockoptInt(copy, SOL.SOCKET, SO.PROTOCOL);
  if (type !== SOCK.STREAM && type !== SOCK.DGRAM) refuse(`an IP socket of type ${type}`);
  const address = getsockname(copy);
  const peer = getpeername(copy);
  let backlog: number | null = null;
  let tcp: SocketRecord['tcp'] = null;
  if (type === SOCK.STREAM) {
    const info = getsockopt(copy, SOL.TCP, TCP_INFO, 232);
    const state = info.readUInt8(0);
    if (state === TCP_LISTEN) {
      backlog = info.readUInt32LE(TCPI_SACKED);
      const waiting = info.readUInt32LE(TCPI_UNACKED);
      if (waiting > 0) {
        ctx.warn(
          `fd ${fd} (listening on ${formatSockaddr(address)}): ${waiting} connection(s) not yet accepted are dropped`,
        );
      }
    } else if (state !== TCP_CLOSE) {
      const connection = `a TCP connection (${formatSockaddr(address)} -> ${peer ? formatSockaddr(peer) : '?'})`;
      if (state !== TCP_ESTABLISHED)
        refuse(`${connection} in state ${TCP_STATES[state] ?? state}`, 'which ferry cannot checkpoint');
      if (ctx.migrating)
        refuse(
          connection,
          "which a migration cannot move (its address stays with this host): close it first, or checkpoint with 'ferry dump --tcp-established' and restore where the address has moved to",
        );
      if (!ctx.tcpEstablished)
        refuse(connection, 'and --tcp-established was not given: dump with it to take the connection along');
      // Its packets wait (are dropped) from before it is read until it is restored.
      ctx.networkLock?.hold(address, peer!);
      tcp = dumpTcp(ctx, fd, copy);
    }
  }
  const option = (level: number, name: number): boolean => getsockoptInt(copy, level, name) !== 0;
  return {
    fd,
    flags,
    family,
    type,
    protocol,
    address,
    peer,
    backlog,
    reuseaddr: option(SOL.SOCKET, SO.REUSEADDR),
    reuseport: option(SOL.SOCKET, SO.REUSEPORT),
    keepalive: option(SOL.SOCKET, SO.KEEPALIVE),
    nodelay: type === SOCK.STREAM && option(SOL.TCP, TCP_NODELAY),
    v6only: family === AF.INET6 && option(SOL.IPV6, IPV6_V6ONLY),
    options: dumpSockopts(copy, family, type, protocol),
    tcp,
  };
}

export const fdSocket: FdKind<'socket', SocketRecord> = {
  kind: 'socket',
  record,
  matches: (info) => info.socket?.family === AF.INET || info.socket?.family === AF.INET6,
  dump: (ctx, info) => readSocket(ctx, info.fd, info.socket!.copy, info.fdinfo.flags),
  restore(ctx, rec, fds) {
    const remote = ctx.remote;
    const made = fds.create({ name: 'socket', nr: NR.socket, args: [rec.family, rec.type, rec.protocol] });
    const int = (value: number): bigint => {
      const buf = Buffer.alloc(4);
      buf.writeInt32LE(value);
      return remote.put(buf);
    };
    const set = (level: number, name: number, value: boolean, what: string): void =>
      fds.call({
        name: `setsockopt(${what})`,
        nr: NR.setsockopt,
        args: [made, level, name, int(value ? 1 : 0), 4],
      });
    const where = formatSockaddr(rec.address);
    // Bound again even beside connections of the old socket still in TIME_WAIT; put back after.
    set(SOL.SOCKET, SO.REUSEADDR, true, 'SO_REUSEADDR');
    if (rec.family === AF.INET6) set(SOL.IPV6, IPV6_V6ONLY, rec.v6only, 'IPV6_V6ONLY');
    if (rec.reuseport) set(SOL.SOCKET, SO.REUSEPORT, true, 'SO_REUSEPORT');
    if (rec.keepalive) set(SOL.SOCKET, SO.KEEPALIVE, true, 'SO_KEEPALIVE');
    if (rec.nodelay) set(SOL.TCP, TCP_NODELAY, true, 'TCP_NODELAY');
    if (rec.tcp) repairBeforeConnect(ctx, fds, made, rec.tcp);
    if (port(rec.address) !== 0) {
      fds.call({
        name: `bind(${where})`,
        nr: NR.bind,
        args: [made, remote.put(rec.address), rec.address.length],
      });
    }
    if (rec.backlog !== null)
      fds.call({ name: `listen(${where})`, nr: NR.listen, args: [made, rec.backlog] });
    if (rec.peer) {
      const peer = formatSockaddr(rec.peer);
      fds.call({
        name: `connect(${peer})`,
        nr: NR.connect,
        args: [made, remote.put(rec.peer), rec.peer.length],
      });
      if (rec.tcp) repairAfterConnect(ctx, fds, made, rec.tcp);
    }
    set(SOL.SOCKET, SO.REUSEADDR, rec.reuseaddr, 'SO_REUSEADDR');
    setStatusFlags(fds, made, rec.flags);
    fds.place(rec.fd, made, rec.flags);
    restoreSockopts(ctx, fds, rec.fd, rec.options);
  },
};
