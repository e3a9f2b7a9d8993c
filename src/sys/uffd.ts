// userfaultfd(2): constants, the UFFDIO_API handshake, and the structs ferry passes to its ioctls.
import { closeSync } from 'node:fs';
import { isErrno } from './errno.js';
import { ioctl, ioctlAsync, ior, iowr } from './ioctl.js';
import { syscall } from './call.js';

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
    // struct uffdio_copy { u64 dst; u64 src; u64 len; u64 mode; s64 copy; }
    const arg = Buffer.alloc(40);
    arg.writeBigUInt64LE(dst + BigInt(done), 0);
    arg.writeBigUInt64LE(src + BigInt(done), 8);
    arg.writeBigUInt64LE(BigInt(len - done), 16);
    try {
      await ioctlAsync(fd, UFFDIO_COPY, 'UFFDIO_COPY', arg);
      return;
    } catch (err) {
      const copied = Number(arg.readBigInt64LE(32));
      if (!isErrno(err, 'EAGAIN')) throw err;
      if (copied > 0) done += copied;
    }
  }
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
