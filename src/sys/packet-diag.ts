// The packet (AF_PACKET) sockets of this network namespace, as sock_diag lists them: what
// getsockopt does not tell (the copy threshold, the multicast and promiscuous memberships) and
// what ferry refuses (mmap rings, fanout groups).
import { attributes, sockDiagDump } from './sock-diag.js';

export const AF_PACKET = 17;
const PACKET_SHOW = { INFO: 1, MCLIST: 2, RING_CFG: 4, FANOUT: 8 } as const;
const PACKET_DIAG = { INFO: 0, MCLIST: 1, RX_RING: 2, TX_RING: 3, FANOUT: 4 } as const;
/** struct packet_diag_info's pdi_flags. */
export const PDI = { RUNNING: 1, AUXDATA: 2, ORIGDEV: 4, VNETHDR: 8, LOSS: 0x10 } as const;
/** struct packet_diag_mclist: index, count, type, alen, addr[32]. */
const MCLIST_SIZE = 44;

export interface PacketMembership {
  ifindex: number;
  /** How many times it was added (each PACKET_ADD_MEMBERSHIP of the same counts). */
  count: number;
  /** PACKET_MR_MULTICAST 0, PROMISC 1, ALLMULTI 2, UNICAST 3. */
  type: number;
  address: Buffer;
}

export interface PacketSocketInfo {
  ino: number;
  type: number;
  /** The EtherType it takes, in host byte order (packet_diag turns it so). */
  protocol: number;
  /** The interface it is bound to, 0 for all. */
  ifindex: number;
  version: number;
  reserve: number;
  copyThresh: number;
  tstamp: number;
  /** PDI flags. */
  flags: number;
  memberships: PacketMembership[];
  rings: boolean;
  fanout: boolean;
}

/** struct packet_diag_req: every socket, with its info, memberships, rings and fanout. */
function request(): Buffer {
  const req = Buffer.alloc(20); // family, protocol, pad, ino, show, cookie[2]
  req.writeUInt8(AF_PACKET, 0);
  req.writeUInt32LE(PACKET_SHOW.INFO | PACKET_SHOW.MCLIST | PACKET_SHOW.RING_CFG | PACKET_SHOW.FANOUT, 8);
  req.writeUInt32LE(0xffffffff, 12);
  req.writeUInt32LE(0xffffffff, 16);
  return req;
}

function parseSocket(msg: Buffer): PacketSocketInfo {
  const info: PacketSocketInfo = {
    ino: msg.readUInt32LE(4),
    type: msg.readUInt8(1),
    protocol: msg.readUInt16LE(2),
    ifindex: 0,
    version: 0,
    reserve: 0,
    copyThresh: 0,
    tstamp: 0,
    flags: 0,
    memberships: [],
    rings: false,
    fanout: false,
  };
  for (const [type, data] of attributes(msg, 16)) {
    if (type === PACKET_DIAG.INFO) {
      info.ifindex = data.readUInt32LE(0);
      info.version = data.readUInt32LE(4);
      info.reserve = data.readUInt32LE(8);
      info.copyThresh = data.readUInt32LE(12);
      info.tstamp = data.readUInt32LE(16);
      info.flags = data.readUInt32LE(20);
    } else if (type === PACKET_DIAG.MCLIST) {
      for (let at = 0; at + MCLIST_SIZE <= data.length; at += MCLIST_SIZE) {
        const alen = data.readUInt16LE(at + 10);
        info.memberships.push({
          ifindex: data.readUInt32LE(at),
          count: data.readUInt32LE(at + 4),
          type: data.readUInt16LE(at + 8),
          address: Buffer.from(data.subarray(at + 12, at + 12 + Math.min(alen, 32))),
        });
      }
    } else if (type === PACKET_DIAG.RX_RING || type === PACKET_DIAG.TX_RING) info.rings = true;
    else if (type === PACKET_DIAG.FANOUT) info.fanout = true;
  }
  return info;
}

/** Every packet socket of this network namespace, by inode. */
export function packetSockets(): Map<number, PacketSocketInfo> {
  return new Map(sockDiagDump(request(), 'AF_PACKET').map((msg) => [msg.readUInt32LE(4), parseSocket(msg)]));
}
