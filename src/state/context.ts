// What the state modules get to work with: on dump, the frozen process; on restore, the stub that
// becomes the restored process.
import { FerryError } from '../errors.js';
import { listProcDir } from '../proc/files.js';
import type { ProcStat } from '../proc/stat.js';
import type { ProcStatus } from '../proc/status.js';
import { NR } from '../sys/nr.js';
import type { RemoteCall, RemoteSyscalls } from '../tracee/remote.js';
import type { Tracee } from '../tracee/tracee.js';
import type { ImageSink, ImageSource } from '../image/sink.js';
import type { NetworkLock } from './netlock.js';
import type { TreeFds } from './fd-shared.js';

export interface DumpContext {
  pid: number;
  tracee: Tracee;
  /** Runs syscalls inside the process (its first thread), with a scratch region installed. */
  remote: RemoteSyscalls;
  stat: ProcStat;
  status: ProcStatus;
  sink: ImageSink;
  /** Write a whole image part (a saved file's content) and record it in the manifest. */
  writePart(name: string, data: Buffer): void;
  /** Say something the user should know (the CLI prints it; --json collects it). */
  warn(message: string): void;
  /** Descriptors that are ferry's own dirty tracker, left out of the image. */
  trackerFds: readonly number[];
  /** Take established TCP connections along (TCP_REPAIR) rather than refuse them. */
  tcpEstablished: boolean;
  /** The image goes to another host (a migration), not to a directory. */
  migrating: boolean;
  /** Holds the packets of the TCP connections taken along (with tcpEstablished). */
  networkLock: NetworkLock | undefined;
  /** Shared memory objects (dev:inode) whose pages an earlier process of the dump stored. */
  sharedObjects: Set<string>;
}

export interface RestoreContext {
  /** PID of the restored process (the stub), and the PID it had when dumped. */
  pid: number;
  originalPid: number;
  stub: Tracee;
  /** Runs syscalls inside the stub, with the control region (scratch) installed. */
  remote: RemoteSyscalls;
  source: ImageSource;
  /** Run after the restore, successful or not (temporary files to remove). */
  cleanup: (() => void)[];
  warn(message: string): void;
  /** What the processes of the tree lend one another (descriptors, shared memory). */
  tree: TreeFds;
  /** The image is temporary: page data written into the process may be dropped from its files. */
  consumePages: boolean;
  /**
   * The file credentials the process's own paths are opened, bound and watched with (a restore for
   * a caller bound to a uid): the kernel checks them, not ferry's root.
   */
  user?: { fsuid: number; fsgid: number };
}

/**
 * `call`, which names a path of the process's (a file it had open or mapped, its cwd, a socket it
 * bound), made with the process's file credentials when the restore has them (RestoreContext.user):
 * setfsgid and setfsuid before, back to root's after (which gives back the file capabilities).
 * Returns the calls and where `call` is among them.
 */
export function asUser(
  ctx: Pick<RestoreContext, 'user'>,
  call: RemoteCall,
): { calls: RemoteCall[]; at: number } {
  if (!ctx.user) return { calls: [call], at: 0 };
  const { fsuid, fsgid } = ctx.user;
  return {
    calls: [
      { name: 'setfsgid', nr: NR.setfsgid, args: [fsgid] },
      { name: 'setfsuid', nr: NR.setfsuid, args: [fsuid] },
      call,
      { name: 'setfsuid(0)', nr: NR.setfsuid, args: [0] },
      { name: 'setfsgid(0)', nr: NR.setfsgid, args: [0] },
    ],
    at: 2,
  };
}

/**
 * remote.check() of a call on a path, with `user`'s file credentials (as asUser() gives them), put
 * back to root's whether or not it fails: for a call whose failure is an answer.
 */
export function checkAsUser(
  remote: RestoreContext['remote'],
  user: NonNullable<RestoreContext['user']>,
  name: string,
  nr: number,
  ...args: (number | bigint)[]
): bigint {
  remote.call(NR.setfsgid, user.fsgid);
  remote.call(NR.setfsuid, user.fsuid);
  try {
    return remote.check(name, nr, ...args);
  } finally {
    remote.call(NR.setfsuid, 0);
    remote.call(NR.setfsgid, 0);
  }
}

/** The descriptor open() will return next in process `pid`: its lowest free one. */
export function lowestFreeFd(pid: number): number {
  const used = new Set(listProcDir(pid, 'fd').map(Number));
  let fd = 0;
  while (used.has(fd)) fd++;
  return fd;
}

/** Check that a descriptor-returning call gave the descriptor that was predicted. */
export function expectFd(got: bigint | undefined, predicted: number, what: string): void {
  if (got !== BigInt(predicted)) {
    throw new FerryError(
      'FERRY_INTERNAL',
      `${what} returned descriptor ${String(got)}, not the predicted ${predicted}`,
    );
  }
}

/** The FERRY_UNSUPPORTED_STATE refusal: what, in which process, and why. */
export function unsupportedMessage(pid: number, what: string, why: string): string {
  return `cannot checkpoint process ${pid}: ${what} ${why}`;
}
