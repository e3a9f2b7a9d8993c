// userfaultfd(2): constants, the UFFDIO_API handshake, and the structs ferry passes to its ioctls.
import { closeSync } from 'node:fs';
import { constants } from 'node:os';
import { SysError } from './errno.js';
import { ioctl, ior, iowr } from './ioctl.js';
import { syscall } from './call.js';
import { trySyscall, trySyscallAsync } from './libc.js';

import { NR } from './nr.js';
import { O } from './fcntl.js';

const UFFDIO = 0xaa;
export const UFFD_API = 0xaan;

/** UFFD_FEATURE_* bits negotiated with UFFDIO_API. */
export const UFFD_FEATURE = {
  PAGEFAULT_FLAG_WP: 1n << 0n,
  EVENT_FORK: 1n << 1n,
  EVENT_REMAP: 1n << 2n,
  EVENT_REMOVE: 1n << 3n,
  EVENT_UNMAP: 1n << 6n,
  MISSING_SHMEM: 1n << 5n,
  THREAD_ID: 1n << 8n,
  WP_UNPOPULATED: 1n << 13n,
  WP_ASYNC: 1n << 15n,
} as const;

export const UFFDIO_API = iowr(UFFDIO, 0x3f, 24);
const UFFDIO_REGISTER = iowr(UFFDIO, 0x00, 32);
const UFFDIO_UNREGISTER = ior(UFFDIO, 0x01, 16);
const UFFDIO_COPY = iowr(UFFDIO, 0x03, 40);
const UFFDIO_ZEROPAGE = iowr(UFFDIO, 0x04, 32);
const UFFDIO_WRITEPROTECT = iowr(UFFDIO, 0x06, 24);
const UFFDIO_WRITEPROTECT_MODE_WP = 1n;

/** userfaultfd(2) flag: handle faults from user mode only (allowed without privileges). */
export const UFFD_USER_MODE_ONLY = 1;
/** UFFDIO_REGISTER modes: faults on missing pages (filled with UFFDIO_COPY), on write-protected ones. */
const REGISTER_MODE = { missing: 1n, wp: 2n } as const;

/** Create a userfaultfd in this process. */
export function userfaultfd(flags: number): number {
  return syscall(NR.userfaultfd, 'userfaultfd', () => [`0x${flags.toString(16)}`], flags);
}

/** Encode struct uffdio_api { u64 api; u64 features; u64 ioctls; }. */
function encodeUffdioApi(features: bigint): Buffer {
  const buf = Buffer.alloc(24);
  buf.writeBigUInt64LE(UFFD_API, 0);
  buf.writeBigUInt64LE(features, 8);
  return buf;
}

/** The UFFDIO_API handshake on `fd`, asking for `features`; returns what the kernel granted. */
export function uffdApi(fd: number, features: bigint): bigint {
  const api = encodeUffdioApi(features);
  ioctl(fd, UFFDIO_API, 'UFFDIO_API', api);
  return api.readBigUInt64LE(8);
}

/**
 * struct uffdio_register { struct uffdio_range { u64 start; u64 len; }; u64 mode; u64 ioctls; }, whose
 * first 24 bytes are also struct uffdio_writeprotect { struct uffdio_range; u64 mode; }.
 */
function registerArg(start: bigint, len: bigint, mode: bigint): Buffer {
  const buf = Buffer.alloc(32);
  buf.writeBigUInt64LE(start, 0);
  buf.writeBigUInt64LE(len, 8);
  buf.writeBigUInt64LE(mode, 16);
  return buf;
}

/**
 * Register [start, start + len) of the userfaultfd's process for faults of `mode`. The descriptor
 * may be a copy in another process (pidfd_getfd): the kernel acts on the memory of the process
 * that created it.
 */
export function uffdRegister(fd: number, start: bigint, len: bigint, mode: keyof typeof REGISTER_MODE): void {
  ioctl(fd, UFFDIO_REGISTER, 'UFFDIO_REGISTER', registerArg(start, len, REGISTER_MODE[mode]));
}

/**
 * Write-protect [start, start + len) (`protect`), or lift the protection: in async mode a page
 * not protected counts as written (PAGEMAP_SCAN's PAGE_IS_WRITTEN).
 */
export function uffdWriteProtect(fd: number, start: bigint, len: bigint, protect: boolean): void {
  const arg = registerArg(start, len, protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0n);
  ioctl(fd, UFFDIO_WRITEPROTECT, 'UFFDIO_WRITEPROTECT', arg);
}

/** Unregister [start, start + len) of the userfaultfd's process. */
export function uffdUnregister(fd: number, start: bigint, len: bigint): void {
  const range = Buffer.alloc(16);
  range.writeBigUInt64LE(start, 0);
  range.writeBigUInt64LE(len, 8);
  ioctl(fd, UFFDIO_UNREGISTER, 'UFFDIO_UNREGISTER', range);
}

/**
 * UFFDIO_COPY on one of libuv's threads: `len` bytes of this process's memory at `src` become the
 * missing pages at `dst` of the userfaultfd's process, made by the kernel with those bytes in them
 * (not zeroed first, no fault taken). What an EAGAIN left (the process's mappings changing
 * meanwhile) is copied again.
 */
export async function uffdCopyAsync(fd: number, dst: bigint, src: bigint, len: number): Promise<void> {
  for (let done = 0; done < len;) {
    const out = await uffdTryCopyAsync(fd, dst + BigInt(done), src + BigInt(done), len - done);
    if (out.errno === 0) return;
    if (out.errno !== constants.errno.EAGAIN)
      throw new SysError('ioctl', [String(fd), 'UFFDIO_COPY'], out.errno);
    done += out.copied;
  }
}

/** struct uffdio_copy { u64 dst; u64 src; u64 len; u64 mode; s64 copy; } */
function copyArg(dst: bigint, src: bigint, len: number): Buffer {
  const arg = Buffer.alloc(40);
  arg.writeBigUInt64LE(dst, 0);
  arg.writeBigUInt64LE(src, 8);
  arg.writeBigUInt64LE(BigInt(len), 16);
  return arg;
}

/** What one UFFDIO_COPY did: the bytes it copied before it stopped, and why it stopped (0: done). */
export interface CopyOutcome {
  copied: number;
  errno: number;
}

function copyOutcome(ret: number, arg: Buffer): CopyOutcome {
  const copied = Number(arg.readBigInt64LE(32));
  return { copied: copied > 0 ? copied : 0, errno: ret < 0 ? -ret : 0 };
}

/**
 * One UFFDIO_COPY, its failure returned, not thrown: EEXIST (a page of the range is there
 * already), EAGAIN (the process's mappings are changing) and ESRCH (its memory is gone) are
 * answers a page server acts on. Wakes the threads waiting on the range.
 */
export function uffdTryCopy(fd: number, dst: bigint, src: bigint, len: number): CopyOutcome {
  const arg = copyArg(dst, src, len);
  return copyOutcome(trySyscall(NR.ioctl, fd, UFFDIO_COPY, arg), arg);
}

/** uffdTryCopy() on one of libuv's threads. */
export async function uffdTryCopyAsync(
  fd: number,
  dst: bigint,
  src: bigint,
  len: number,
): Promise<CopyOutcome> {
  const arg = copyArg(dst, src, len);
  return copyOutcome(await trySyscallAsync(NR.ioctl, fd, UFFDIO_COPY, arg), arg);
}

/**
 * UFFDIO_ZEROPAGE over [start, start + len): the missing pages there become zero pages, and the
 * threads waiting on them wake. Returns 0 or the errno, as uffdTryCopy() does.
 */
export function uffdTryZeropage(fd: number, start: bigint, len: number): number {
  // struct uffdio_zeropage { struct uffdio_range range; u64 mode; s64 zeropage; }
  const arg = Buffer.alloc(32);
  arg.writeBigUInt64LE(start, 0);
  arg.writeBigUInt64LE(BigInt(len), 8);
  const ret = trySyscall(NR.ioctl, fd, UFFDIO_ZEROPAGE, arg);
  return ret < 0 ? -ret : 0;
}

/** A message read from a userfaultfd (struct uffd_msg). */
export type UffdMessage =
  | { event: 'pagefault'; address: bigint }
  /** A fork of the process (UFFD_FEATURE_EVENT_FORK): the child's userfaultfd, a descriptor of ours. */
  | { event: 'fork'; fd: number }
  /** mremap() moved [from, from + len) to `to` (UFFD_FEATURE_EVENT_REMAP). */
  | { event: 'remap'; from: bigint; to: bigint; len: bigint }
  /** [start, end) was dropped (madvise DONTNEED or REMOVE) or unmapped (EVENT_REMOVE, EVENT_UNMAP). */
  | { event: 'remove'; start: bigint; end: bigint };

const MSG_SIZE = 32;
const EVENT = { PAGEFAULT: 0x12, FORK: 0x13, REMAP: 0x14, REMOVE: 0x15, UNMAP: 0x16 } as const;
const PAGE_MASK = ~0xfffn;

function decodeMessage(buf: Buffer, at: number): UffdMessage {
  const event = buf.readUInt8(at);
  const word = (i: number): bigint => buf.readBigUInt64LE(at + 8 + i * 8);
  switch (event) {
    case EVENT.PAGEFAULT:
      return { event: 'pagefault', address: word(1) & PAGE_MASK };
    case EVENT.FORK:
      return { event: 'fork', fd: buf.readUInt32LE(at + 8) };
    case EVENT.REMAP:
      return { event: 'remap', from: word(0), to: word(1), len: word(2) };
    case EVENT.REMOVE:
    case EVENT.UNMAP:
      return { event: 'remove', start: word(0), end: word(1) };
    default:
      throw new SysError(
        'read',
        ['userfaultfd', `unknown event 0x${event.toString(16)}`],
        constants.errno.EPROTO,
      );
  }
}

/** The messages waiting on non-blocking userfaultfd `fd`, read through `buf` (none: []). */
export function readUffdMessages(fd: number, buf: Buffer): UffdMessage[] {
  const got = trySyscall(NR.read, fd, buf, buf.length - (buf.length % MSG_SIZE));
  if (got === -constants.errno.EAGAIN) return [];
  if (got < 0) throw new SysError('read', ['userfaultfd'], -got);
  const out: UffdMessage[] = [];
  for (let at = 0; at + MSG_SIZE <= got; at += MSG_SIZE) out.push(decodeMessage(buf, at));
  return out;
}

/**
 * The features this kernel's userfaultfd offers: a real UFFDIO_API handshake on a fresh descriptor,
 * asking for `wanted` (the kernel refuses a handshake that asks for more than it has).
 */
export function probeUffdFeatures(wanted: bigint): bigint {
  const fd = userfaultfd(O.CLOEXEC | O.NONBLOCK);
  try {
    return uffdApi(fd, wanted);
  } finally {
    closeSync(fd);
  }
}
