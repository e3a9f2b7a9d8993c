// clone3(2)'s flags and its struct clone_args, for the clones ferry runs inside a stub.

export const CLONE = {
  VM: 0x100n,
  FS: 0x200n,
  FILES: 0x400n,
  SIGHAND: 0x800n,
  PARENT: 0x8000n,
  THREAD: 0x10000n,
  SYSVSEM: 0x40000n,
} as const;

/** The flags pthread_create gives clone, less those whose effect ferry sets itself (TLS, tid words). */
export const CLONE_THREAD_FLAGS =
  CLONE.VM | CLONE.FS | CLONE.FILES | CLONE.SIGHAND | CLONE.THREAD | CLONE.SYSVSEM;

/** sizeof(struct clone_args), up to and including set_tid_size. */
export const CLONE_ARGS_SIZE = 80;

/**
 * A struct clone_args. The child shares the caller's stack (ferry sets its registers before it
 * runs); `setTid`, when given, is the address of one pid_t: the ID the child must get.
 */
export function cloneArgs(flags: bigint, exitSignal: number, setTid?: bigint): Buffer {
  const args = Buffer.alloc(CLONE_ARGS_SIZE);
  args.writeBigUInt64LE(flags, 0);
  args.writeBigUInt64LE(BigInt(exitSignal), 32);
  if (setTid !== undefined) {
    args.writeBigUInt64LE(setTid, 64);
    args.writeBigUInt64LE(1n, 72);
  }
  return args;
}
