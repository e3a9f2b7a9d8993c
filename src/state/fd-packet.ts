// Packet sockets (AF_PACKET, SOCK_RAW or SOCK_DGRAM): made again with socket, their packet options
// (version, reserve, copy threshold, timestamps, auxdata, origdev, vnet header, loss, ignoring
// outgoing, qdisc bypass, tx offset), bound to the
// interface they were bound to (by name: an index may differ on another host), their memberships
// (multicast, promiscuous, allmulti) added again as many times as they were, and their other
// options (sockopts.ts). sock_diag tells what getsockopt does not (packet-diag.ts). Mmap rings and
// fanout groups are refused; packets received and not read are dropped (warned).
import { readdirSync, readFileSync } from 'node:fs';
import { FerryError } from '../errors.js';
import { array, base64, boolean, integer, object, string, type Infer } from '../image/schema.js';
import { NR } from '../sys/nr.js';
import { AF_PACKET, packetSockets, PDI, type PacketSocketInfo } from '../sys/packet-diag.js';
import { getsockoptInt, SIOCINQ, SOCK } from '../sys/socket.js';
import { ioctlInt } from '../sys/ioctl.js';
import { unsupportedMessage } from './context.js';
import { setStatusFlags, type FdKind, type FilesDumpContext } from './fd-kind.js';
import { dumpSockopts, int, restoreSockopts, sockoptsRecord } from './sockopts.js';

const SOL_PACKET = 263;
const PACKET = {
  ADD_MEMBERSHIP: 1,
  COPY_THRESH: 7,
  AUXDATA: 8,
  ORIGDEV: 9,
  VERSION: 10,
  RESERVE: 12,
  LOSS: 14,
  VNET_HDR: 15,
  TIMESTAMP: 17,
  TX_HAS_OFF: 19,
  QDISC_BYPASS: 20,
  IGNORE_OUTGOING: 23,
} as const;
/** Switches getsockopt reads, which sock_diag does not tell. */
const SWITCHES = [
  ['ignoreOutgoing', PACKET.IGNORE_OUTGOING, 'PACKET_IGNORE_OUTGOING'],
  ['qdiscBypass', PACKET.QDISC_BYPASS, 'PACKET_QDISC_BYPASS'],
  ['txHasOff', PACKET.TX_HAS_OFF, 'PACKET_TX_HAS_OFF'],
] as const;
/** The pdi_flags each boolean option shows as. */
const FLAG_OPTIONS: [flag: number, option: number, name: string][] = [
  [PDI.AUXDATA, PACKET.AUXDATA, 'PACKET_AUXDATA'],
  [PDI.ORIGDEV, PACKET.ORIGDEV, 'PACKET_ORIGDEV'],
  [PDI.VNETHDR, PACKET.VNET_HDR, 'PACKET_VNET_HDR'],
  [PDI.LOSS, PACKET.LOSS, 'PACKET_LOSS'],
];
const SOCK_RAW = 3;
const SOCKADDR_LL = 20;
const PACKET_MREQ = 16;
const MAX_ADDR = 8;

const iface = string({ max: 15 });
const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  type: integer(0, 16),
  /** The EtherType it takes (host byte order; socket() is given it in network order). */
  protocol: integer(0, 0xffff),
  /** The interface it is bound to, or '' for every one. */
  interface: string({ max: 15 }),
  version: integer(0, 2),
  reserve: integer(0, 2 ** 31 - 1),
  copyThresh: integer(0, 2 ** 31 - 1),
  timestamp: integer(0, 2 ** 31 - 1),
  /** pdi_flags: auxdata, origdev, vnet header, loss. */
  packetFlags: integer(0, 2 ** 31 - 1),
  ignoreOutgoing: boolean,
  qdiscBypass: boolean,
  txHasOff: boolean,
  memberships: array(
    object({
      interface: iface,
      count: integer(1, 2 ** 31 - 1),
      type: integer(0, 3),
      address: base64(MAX_ADDR),
    }),
    { max: 1 << 16 },
  ),
  options: sockoptsRecord,
});
type PacketRecord = Infer<typeof record>;

/** The name of interface `index` in this network namespace. */
function interfaceName(index: number): string | undefined {
  for (const name of readdirSync('/sys/class/net'))
    try {
      if (Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'latin1')) === index) return name;
    } catch {
      // gone meanwhile
    }
  return undefined;
}

/** The index of interface `name` here, or a clear refusal. */
function interfaceIndex(name: string, fd: number): number {
  try {
    return Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'latin1'));
  } catch {
    throw new FerryError(
      'FERRY_RESTORE_FAILED',
      `fd ${fd} (packet socket) was bound to ${name}, which this host has not`,
    );
  }
}

function dumpPacket(
  ctx: FilesDumpContext,
  fd: number,
  copy: number,
  ino: number,
  flags: number,
): PacketRecord {
  const refuse = (why: string): never => {
    throw new FerryError(
      'FERRY_UNSUPPORTED_STATE',
      unsupportedMessage(ctx.pid, `fd ${fd} is a packet socket`, why),
    );
  };
  const s: PacketSocketInfo = packetSockets().get(ino) ?? refuse('that sock_diag does not list');
  if (s.type !== SOCK.DGRAM && s.type !== SOCK_RAW) refuse(`of type ${s.type}`);
  if (s.rings) refuse('with mmap rings (PACKET_RX_RING/PACKET_TX_RING), which ferry cannot checkpoint yet');
  if (s.fanout) refuse('in a fanout group (PACKET_FANOUT), which ferry cannot checkpoint yet');
  const name = (index: number): string =>
    index === 0 ? '' : (interfaceName(index) ?? refuse(`on interface ${index}, which has no name here`));
  const queued = ioctlInt(copy, SIOCINQ, 'SIOCINQ');
  if (queued > 0)
    ctx.warn(`process ${ctx.pid}: fd ${fd} (packet socket): ${queued} bytes of packets not read are dropped`);
  return {
    fd,
    flags,
    type: s.type,
    protocol: s.protocol,
    interface: name(s.ifindex),
    version: s.version,
    reserve: s.reserve,
    copyThresh: s.copyThresh,
    timestamp: s.tstamp,
    packetFlags: s.flags & (PDI.AUXDATA | PDI.ORIGDEV | PDI.VNETHDR | PDI.LOSS),
    ...(Object.fromEntries(
      SWITCHES.map(([key, option]) => [key, getsockoptInt(copy, SOL_PACKET, option) !== 0]),
    ) as Record<(typeof SWITCHES)[number][0], boolean>),
    memberships: s.memberships.map((m) => ({
      interface: name(m.ifindex),
      count: m.count,
      type: m.type,
      address: m.address.subarray(0, MAX_ADDR),
    })),
    // Compared with a new socket of protocol 0: one of another protocol would take packets meanwhile.
    options: dumpSockopts(copy, AF_PACKET, s.type, 0),
  };
}

export const fdPacket: FdKind<'packet', PacketRecord> = {
  kind: 'packet',
  record,
  matches: (info) => info.socket?.family === AF_PACKET,
  dump: (ctx, info) =>
    dumpPacket(
      ctx,
      info.fd,
      info.socket!.copy,
      Number(/^socket:\[(\d+)\]$/.exec(info.target)?.[1]),
      info.fdinfo.flags,
    ),
  restore(ctx, rec, fds) {
    const remote = ctx.remote;
    const networkOrder = ((rec.protocol & 0xff) << 8) | (rec.protocol >> 8);
    const made = fds.create({
      name: 'socket(AF_PACKET)',
      nr: NR.socket,
      args: [AF_PACKET, rec.type, networkOrder],
    });
    const set = (option: number, name: string, value: Buffer): void =>
      fds.call({
        name: `setsockopt(${name})`,
        nr: NR.setsockopt,
        args: [made, SOL_PACKET, option, remote.put(value), value.length],
      });
    if (rec.version !== 0) set(PACKET.VERSION, 'PACKET_VERSION', int(rec.version));
    if (rec.reserve !== 0) set(PACKET.RESERVE, 'PACKET_RESERVE', int(rec.reserve));
    if (rec.copyThresh !== 0) set(PACKET.COPY_THRESH, 'PACKET_COPY_THRESH', int(rec.copyThresh));
    if (rec.timestamp !== 0) set(PACKET.TIMESTAMP, 'PACKET_TIMESTAMP', int(rec.timestamp));
    for (const [flag, option, name] of FLAG_OPTIONS) if (rec.packetFlags & flag) set(option, name, int(1));
    for (const [key, option, name] of SWITCHES) if (rec[key]) set(option, name, int(1));
    if (rec.interface !== '') {
      const addr = Buffer.alloc(SOCKADDR_LL);
      addr.writeUInt16LE(AF_PACKET, 0);
      addr.writeUInt16BE(rec.protocol, 2);
      addr.writeInt32LE(interfaceIndex(rec.interface, rec.fd), 4);
      fds.call({ name: `bind(${rec.interface})`, nr: NR.bind, args: [made, remote.put(addr), addr.length] });
    }
    for (const m of rec.memberships) {
      const mreq = Buffer.alloc(PACKET_MREQ);
      mreq.writeInt32LE(m.interface === '' ? 0 : interfaceIndex(m.interface, rec.fd), 0);
      mreq.writeUInt16LE(m.type, 4);
      mreq.writeUInt16LE(m.address.length, 6);
      m.address.copy(mreq, 8);
      for (let i = 0; i < m.count; i++) set(PACKET.ADD_MEMBERSHIP, 'PACKET_ADD_MEMBERSHIP', mreq);
    }
    setStatusFlags(fds, made, rec.flags);
    fds.place(rec.fd, made, rec.flags);
    restoreSockopts(ctx, fds, rec.fd, rec.options);
  },
};
