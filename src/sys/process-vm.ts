// process_vm_readv/writev: copy between a buffer here and many ranges of another process.
import { syscall, syscallAsync } from './call.js';
import { addressOf } from './libc.js';
import { NR } from './nr.js';

/** A range of the other process's address space. */
export interface RemoteRange {
  addr: bigint;
  len: number;
}

/** The kernel's limit on iovecs per call (UIO_MAXIOV). */
export const IOV_MAX = 1024;

/** struct iovec[] for the ranges. */
export function encodeIovecs(ranges: readonly RemoteRange[]): Buffer {
  const iov = Buffer.alloc(ranges.length * 16);
  ranges.forEach((r, i) => {
    iov.writeBigUInt64LE(r.addr, i * 16);
    iov.writeBigUInt64LE(BigInt(r.len), i * 16 + 8);
  });
  return iov;
}

/** The arguments of a transfer between `local` here and `ranges` of process `pid`. */
function transferArgs(
  name: string,
  pid: number,
  local: Buffer,
  ranges: readonly RemoteRange[],
): [() => string[], number, Buffer, number, Buffer, number, number] {
  if (ranges.length > IOV_MAX) throw new RangeError(`${name}: at most ${IOV_MAX} ranges per call`);
  const localIov = encodeIovecs([{ addr: addressOf(local), len: local.length }]);
  const first = ranges[0];
  const describe = (): string[] => [
    String(pid),
    first ? `0x${first.addr.toString(16)}` : '-',
    `${ranges.length} ranges`,
  ];
  return [describe, pid, localIov, 1, encodeIovecs(ranges), ranges.length, 0];
}

function transfer(
  nr: number,
  name: string,
  pid: number,
  local: Buffer,
  ranges: readonly RemoteRange[],
): number {
  return syscall(nr, name, ...transferArgs(name, pid, local, ranges));
}

/**
 * Read the ranges, in order, into `local`; returns the bytes read, which stops short at the first
 * range that cannot be read (partial transfer), as the kernel does.
 */
export function processVmReadv(pid: number, local: Buffer, ranges: readonly RemoteRange[]): number {
  return transfer(NR.process_vm_readv, 'process_vm_readv', pid, local, ranges);
}

/** processVmReadv() on one of libuv's threads; `local` is the caller's to keep until it settles. */
export function processVmReadvAsync(
  pid: number,
  local: Buffer,
  ranges: readonly RemoteRange[],
): Promise<number> {
  return syscallAsync(
    NR.process_vm_readv,
    'process_vm_readv',
    ...transferArgs('process_vm_readv', pid, local, ranges),
  );
}

/** Write `local`, in order, over the ranges; returns the bytes written. */
export function processVmWritev(pid: number, local: Buffer, ranges: readonly RemoteRange[]): number {
  return transfer(NR.process_vm_writev, 'process_vm_writev', pid, local, ranges);
}

/**
 * process_vm_writev from ranges of this process's memory (`local`, such as a mapped file) to
 * `remote`, byte for byte in order, on one of libuv's threads: several run at once. Resolves to the
 * bytes written, which stops short where a remote range cannot be written.
 */
export function processVmWritevAsync(
  pid: number,
  local: readonly RemoteRange[],
  remote: readonly RemoteRange[],
): Promise<number> {
  if (local.length > IOV_MAX || remote.length > IOV_MAX)
    throw new RangeError(`process_vm_writev: at most ${IOV_MAX} ranges per call`);
  const localIov = encodeIovecs(local);
  const remoteIov = encodeIovecs(remote);
  const first = remote[0];
  return syscallAsync(
    NR.process_vm_writev,
    'process_vm_writev',
    () => [String(pid), first ? `0x${first.addr.toString(16)}` : '-', `${remote.length} ranges`],
    pid,
    localIov,
    local.length,
    remoteIov,
    remote.length,
    0,
  );
}

/** processVmWritevAsync of `local`, buffers here, which the caller keeps until the promise settles. */
export function processVmWriteBuffersAsync(
  pid: number,
  local: readonly Buffer[],
  remote: readonly RemoteRange[],
): Promise<number> {
  return processVmWritevAsync(
    pid,
    local.map((b) => ({ addr: addressOf(b), len: b.length })),
    remote,
  );
}
