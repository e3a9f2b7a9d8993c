// Established TCP connections, through TCP_REPAIR (with --tcp-established). At dump the socket is
// put in repair mode, in which it sends nothing, not even when closed: a killed process's
// connection ends without a FIN or a reset, and the peer knows nothing of it. Its sequence numbers,
// both queues (read without taking them), window, MSS, window scales, SACK and timestamps are saved.
// A process that runs on (--leave-running, or a failed dump) gets its socket out of repair mode.
// Restore makes the socket in repair mode, sets the queues' sequence numbers, binds and connects
// (no handshake), puts back the options, the queued bytes and the window, and leaves repair mode,
// which sends a window probe: the peer answers, and the connection goes on where it was.
import { closeSync } from 'node:fs';
import { integer, object, string, type Infer } from '../image/schema.js';
import { copyFd } from '../sys/pidfd.js';
import { ioctlInt } from '../sys/ioctl.js';
import { NR } from '../sys/nr.js';
import {
  getsockopt,
  getsockoptInt,
  SO,
  peekBytes,
  setsockoptInt,
  SIOCINQ,
  SIOCOUTQ,
  SIOCOUTQNSD,
  SOL,
  TCP_INFO,
  TCP_MAXSEG,
  TCP_QUEUE,
  TCP_QUEUE_SEQ,
  TCP_REPAIR,
  TCP_REPAIR_OPTIONS,
  TCP_REPAIR_QUEUE,
  TCP_REPAIR_WINDOW,
  TCP_TIMESTAMP,
} from '../sys/socket.js';
import type { FdBuilder, FilesDumpContext, FilesRestoreContext } from './fd-kind.js';
import { ghostContent } from './ghost.js';
import { FerryError } from '../errors.js';

const u32 = integer(0, 2 ** 32 - 1);

/** One queue: the sequence number after its last byte, and its bytes (an image part). */
const queueRecord = object({
  seq: u32,
  size: integer(0, 2 ** 31 - 1),
  part: string({ pattern: /^files\/[a-z0-9-]+$/ }),
});

export const tcpRecord = object({
  send: queueRecord,
  recv: queueRecord,
  /** Bytes at the end of the send queue not sent yet (SIOCOUTQNSD). */
  unsent: integer(0, 2 ** 31 - 1),
  mss: u32,
  /** tcpi_options: 1 timestamps, 2 SACK, 4 window scaling. */
  options: integer(0, 255),
  sndWscale: integer(0, 15),
  rcvWscale: integer(0, 15),
  timestamp: u32,
  /** SO_SNDBUF and SO_RCVBUF as read (the kernel's doubled values). */
  sndbuf: integer(0, 2 ** 31 - 1),
  rcvbuf: integer(0, 2 ** 31 - 1),
  /** struct tcp_repair_window. */
  window: object({ sndWl1: u32, sndWnd: u32, maxWindow: u32, rcvWnd: u32, rcvWup: u32 }),
});
export type TcpRecord = Infer<typeof tcpRecord>;

const TCPI_OPT = { TIMESTAMPS: 1, SACK: 2, WSCALE: 4 } as const;
const TCPOPT = { MAXSEG: 2, WINDOW: 3, SACK_PERM: 4, TIMESTAMP: 8 } as const;
const WINDOW_FIELDS = ['sndWl1', 'sndWnd', 'maxWindow', 'rcvWnd', 'rcvWup'] as const;
/** Leave repair mode, sending a window probe (-1 would not): the peer's answer brings it up to date. */
const TCP_REPAIR_OFF = 0;
const MSG_DONTWAIT = 0x40;

function readQueue(
  ctx: FilesDumpContext,
  copy: number,
  fd: number,
  which: 'send' | 'recv',
  size: number,
): Infer<typeof queueRecord> {
  setsockoptInt(copy, SOL.TCP, TCP_REPAIR_QUEUE, which === 'send' ? TCP_QUEUE.SEND : TCP_QUEUE.RECV);
  const seq = getsockoptInt(copy, SOL.TCP, TCP_QUEUE_SEQ) >>> 0;
  const data = peekBytes(copy, size);
  if (data.length !== size)
    throw new FerryError(
      'FERRY_INTERNAL',
      `fd ${fd}: the TCP ${which} queue gave ${data.length} of its ${size} bytes`,
    );
  const part = `files/tcp-${ctx.pid}-${fd}-${which}`;
  ctx.writePart(part, data);
  return { seq, size, part };
}

/**
 * Put the connection `copy` (ferry's copy of descriptor `fd`) in repair mode and read it. The
 * process gets it out of repair mode if it runs on.
 */
export function dumpTcp(ctx: FilesDumpContext, fd: number, copy: number): TcpRecord {
  // Leaving repair mode clears SO_REUSEADDR (the kernel's SK_NO_REUSE): it is put back after.
  const reuse = getsockoptInt(copy, SOL.SOCKET, SO.REUSEADDR);
  setsockoptInt(copy, SOL.TCP, TCP_REPAIR, 1);
  ctx.tracee.onRelease(() => {
    const again = copyFd(ctx.pid, fd);
    try {
      setsockoptInt(again, SOL.TCP, TCP_REPAIR, TCP_REPAIR_OFF);
      setsockoptInt(again, SOL.SOCKET, SO.REUSEADDR, reuse);
    } finally {
      closeSync(again);
    }
  });
  const info = getsockopt(copy, SOL.TCP, TCP_INFO, 232);
  const window = getsockopt(copy, SOL.TCP, TCP_REPAIR_WINDOW, 20);
  const outq = ioctlInt(copy, SIOCOUTQ, 'SIOCOUTQ');
  const unsent = ioctlInt(copy, SIOCOUTQNSD, 'SIOCOUTQNSD');
  const send = readQueue(ctx, copy, fd, 'send', outq);
  const recv = readQueue(ctx, copy, fd, 'recv', ioctlInt(copy, SIOCINQ, 'SIOCINQ'));
  return {
    send,
    recv,
    unsent,
    mss: getsockoptInt(copy, SOL.TCP, TCP_MAXSEG),
    options: info.readUInt8(5),
    sndWscale: info.readUInt8(6) & 0xf,
    rcvWscale: info.readUInt8(6) >> 4,
    timestamp: getsockoptInt(copy, SOL.TCP, TCP_TIMESTAMP) >>> 0,
    sndbuf: getsockoptInt(copy, SOL.SOCKET, SO.SNDBUF),
    rcvbuf: getsockoptInt(copy, SOL.SOCKET, SO.RCVBUF),
    window: Object.fromEntries(
      WINDOW_FIELDS.map((name, i) => [name, window.readUInt32LE(i * 4)]),
    ) as TcpRecord['window'],
  };
}

/** Socket `made` of the stub in repair mode, before its bind: the queues' first sequence numbers. */
export function repairBeforeConnect(
  ctx: FilesRestoreContext,
  fds: FdBuilder,
  made: number,
  tcp: TcpRecord,
): void {
  const int = (value: number): bigint => {
    const buf = Buffer.alloc(4);
    buf.writeUInt32LE(value >>> 0);
    return ctx.remote.put(buf);
  };
  const set = (name: number, value: number, what: string): void =>
    fds.call({ name: `setsockopt(${what})`, nr: NR.setsockopt, args: [made, SOL.TCP, name, int(value), 4] });
  set(TCP_REPAIR, 1, 'TCP_REPAIR');
  for (const [which, queue] of [
    [TCP_QUEUE.RECV, tcp.recv],
    [TCP_QUEUE.SEND, tcp.send],
  ] as const) {
    set(TCP_REPAIR_QUEUE, which, 'TCP_REPAIR_QUEUE');
    set(TCP_QUEUE_SEQ, (queue.seq - queue.size) >>> 0, 'TCP_QUEUE_SEQ');
  }
}

/**
 * Socket `made`, connected in repair mode: its options, its queued bytes and its window, then out
 * of repair mode (which clears SO_REUSEADDR: the caller sets it after).
 */
export function repairAfterConnect(
  ctx: FilesRestoreContext,
  fds: FdBuilder,
  made: number,
  tcp: TcpRecord,
): void {
  const remote = ctx.remote;
  const opts: [number, number][] = [[TCPOPT.MAXSEG, tcp.mss]];
  if (tcp.options & TCPI_OPT.SACK) opts.push([TCPOPT.SACK_PERM, 0]);
  if (tcp.options & TCPI_OPT.WSCALE) opts.push([TCPOPT.WINDOW, tcp.sndWscale | (tcp.rcvWscale << 16)]);
  if (tcp.options & TCPI_OPT.TIMESTAMPS) opts.push([TCPOPT.TIMESTAMP, 0]);
  const optBuf = Buffer.alloc(opts.length * 8);
  opts.forEach(([code, value], i) => {
    optBuf.writeUInt32LE(code, i * 8);
    optBuf.writeUInt32LE(value >>> 0, i * 8 + 4);
  });
  const setBuf = (name: number, buf: Buffer, what: string): void =>
    fds.call({
      name: `setsockopt(${what})`,
      nr: NR.setsockopt,
      args: [made, SOL.TCP, name, remote.put(buf), buf.length],
    });
  const u32Buf = (value: number): Buffer => {
    const buf = Buffer.alloc(4);
    buf.writeUInt32LE(value >>> 0);
    return buf;
  };
  setBuf(TCP_REPAIR_OPTIONS, optBuf, 'TCP_REPAIR_OPTIONS');
  if (tcp.options & TCPI_OPT.TIMESTAMPS) setBuf(TCP_TIMESTAMP, u32Buf(tcp.timestamp), 'TCP_TIMESTAMP');
  fds.flush();
  for (const [which, queue, force, saved] of [
    [TCP_QUEUE.RECV, tcp.recv, SO.RCVBUFFORCE, tcp.rcvbuf],
    [TCP_QUEUE.SEND, tcp.send, SO.SNDBUFFORCE, tcp.sndbuf],
  ] as const) {
    if (queue.size === 0) continue;
    // The buffer as it was, or room for the whole queue (the kernel doubles what it is given).
    const room = Math.max(saved, 2 * queue.size + (1 << 16));
    remote.withData(() => {
      fds.call({
        name: 'setsockopt(SO_*BUFFORCE)',
        nr: NR.setsockopt,
        args: [made, SOL.SOCKET, force, remote.put(u32Buf(Math.ceil(room / 2))), 4],
      });
      setBuf(TCP_REPAIR_QUEUE, u32Buf(which), 'TCP_REPAIR_QUEUE');
      fds.flush();
    });
    fillQueue(ctx, made, ghostContent(ctx, queue));
  }
  const window = Buffer.alloc(20);
  WINDOW_FIELDS.forEach((name, i) => window.writeUInt32LE(tcp.window[name], i * 4));
  setBuf(TCP_REPAIR_WINDOW, window, 'TCP_REPAIR_WINDOW');
  setBuf(TCP_REPAIR, u32Buf(TCP_REPAIR_OFF), 'TCP_REPAIR off');
}

/**
 * Write `data` into the queue chosen with TCP_REPAIR_QUEUE, in pieces the socket takes (never
 * waiting: a queue with no room fails the restore rather than hang it).
 */
function fillQueue(ctx: FilesRestoreContext, made: number, data: Buffer): void {
  const remote = ctx.remote;
  let chunk = 1 << 16;
  for (let at = 0; at < data.length;) {
    const piece = data.subarray(at, at + Math.min(chunk, remote.dataFree - 64));
    const sent = remote.withData(() =>
      remote.call(NR.sendto, made, remote.put(piece), piece.length, MSG_DONTWAIT, 0, 0),
    );
    if (sent <= 0n) {
      if (chunk > 1024) {
        chunk >>= 1; // the queue takes a piece at most as large as its buffer allows
        continue;
      }
      throw new FerryError(
        'FERRY_RESTORE_FAILED',
        `a repaired TCP queue took none of ${piece.length} bytes (${sent})`,
      );
    }
    at += Number(sent);
  }
}
