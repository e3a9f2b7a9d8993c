// posix_spawn(3) with file actions: starts a process without going through libuv, whose SIGCHLD
// handler would otherwise reap (and misread) the ptrace stops of its own children.
import { SysError } from './errno.js';
import { addressOf, libcFunction } from './libc.js';

/** What to do with descriptors in the child before exec, in order. */
export type FileAction =
  | { kind: 'close'; fd: number }
  | { kind: 'dup2'; fd: number; newFd: number }
  | { kind: 'open'; fd: number; path: string; flags: number; mode?: number }
  | { kind: 'closefrom'; fd: number }
  | { kind: 'chdir'; path: string };

export interface SpawnOptions {
  /** Environment, `KEY=value`; empty when omitted. */
  env?: readonly string[];
  fileActions?: readonly FileAction[];
  /** Start a new session (setsid) so the child has no controlling terminal. */
  setsid?: boolean;
}

type Fn = (...args: unknown[]) => number;
const faInit = libcFunction<Fn>('int posix_spawn_file_actions_init(void *fa)');
const faDestroy = libcFunction<Fn>('int posix_spawn_file_actions_destroy(void *fa)');
const faClose = libcFunction<Fn>('int posix_spawn_file_actions_addclose(void *fa, int fd)');
const faDup2 = libcFunction<Fn>('int posix_spawn_file_actions_adddup2(void *fa, int fd, int newfd)');
const faOpen = libcFunction<Fn>(
  'int posix_spawn_file_actions_addopen(void *fa, int fd, const char *path, int oflag, uint32_t mode)',
);
const faClosefrom = libcFunction<Fn>('int posix_spawn_file_actions_addclosefrom_np(void *fa, int from)');
const faChdir = libcFunction<Fn>('int posix_spawn_file_actions_addchdir_np(void *fa, const char *path)');
const attrInit = libcFunction<Fn>('int posix_spawnattr_init(void *attr)');
const attrDestroy = libcFunction<Fn>('int posix_spawnattr_destroy(void *attr)');
const attrSetflags = libcFunction<Fn>('int posix_spawnattr_setflags(void *attr, short flags)');
const attrSetsigmask = libcFunction<Fn>('int posix_spawnattr_setsigmask(void *attr, void *set)');
const attrSetsigdefault = libcFunction<Fn>('int posix_spawnattr_setsigdefault(void *attr, void *set)');
const posixSpawnRaw = libcFunction<Fn>(
  'int posix_spawn(void *pid, const char *path, void *fa, void *attr, void *argv, void *envp)',
);

const SETSIGDEF = 0x04;
const SETSIGMASK = 0x08;
const SETSID = 0x80;
/** glibc's posix_spawn_file_actions_t is 80 bytes and posix_spawnattr_t 336; leave room. */
const OPAQUE_SIZE = 512;
const SIGSET_SIZE = 128;

/** A NULL-terminated char*[] and the string storage it points into (keep both alive). */
function stringArray(items: readonly string[]): { ptrs: Buffer; storage: Buffer[] } {
  const storage = items.map((s) => Buffer.from(`${s}\0`));
  const ptrs = Buffer.alloc((items.length + 1) * 8);
  storage.forEach((b, i) => ptrs.writeBigUInt64LE(addressOf(b), i * 8));
  return { ptrs, storage };
}

function check(what: string, path: string, err: number): void {
  if (err !== 0) throw new SysError(what, [path], err);
}

function addFileAction(fa: Buffer, action: FileAction, keep: Buffer[], path: string): void {
  switch (action.kind) {
    case 'close':
      return check('posix_spawn_file_actions_addclose', path, faClose(fa, action.fd));
    case 'dup2':
      return check('posix_spawn_file_actions_adddup2', path, faDup2(fa, action.fd, action.newFd));
    case 'closefrom':
      return check('posix_spawn_file_actions_addclosefrom_np', path, faClosefrom(fa, action.fd));
    case 'chdir': {
      const p = Buffer.from(`${action.path}\0`);
      keep.push(p);
      return check('posix_spawn_file_actions_addchdir_np', path, faChdir(fa, p));
    }
    case 'open': {
      const p = Buffer.from(`${action.path}\0`);
      keep.push(p);
      const err = faOpen(fa, action.fd, p, action.flags, action.mode ?? 0o600);
      return check('posix_spawn_file_actions_addopen', path, err);
    }
  }
}

/**
 * Start `path` with `argv`, all signals at their default disposition and none blocked (Node ignores
 * SIGPIPE, and ignored signals survive exec). Returns the child's PID; the caller must reap it.
 */
export function posixSpawn(path: string, argv: readonly string[], options: SpawnOptions = {}): number {
  const fa = Buffer.alloc(OPAQUE_SIZE);
  const attr = Buffer.alloc(OPAQUE_SIZE);
  check('posix_spawn_file_actions_init', path, faInit(fa));
  check('posix_spawnattr_init', path, attrInit(attr));
  try {
    const keep: Buffer[] = [];
    for (const action of options.fileActions ?? []) addFileAction(fa, action, keep, path);
    const all = Buffer.alloc(SIGSET_SIZE, 0xff);
    const none = Buffer.alloc(SIGSET_SIZE);
    check('posix_spawnattr_setsigdefault', path, attrSetsigdefault(attr, all));
    check('posix_spawnattr_setsigmask', path, attrSetsigmask(attr, none));
    check(
      'posix_spawnattr_setflags',
      path,
      attrSetflags(attr, SETSIGDEF | SETSIGMASK | (options.setsid ? SETSID : 0)),
    );
    const args = stringArray(argv);
    const env = stringArray(options.env ?? []);
    const pid = Buffer.alloc(4);
    check('posix_spawn', path, posixSpawnRaw(pid, path, fa, attr, args.ptrs, env.ptrs));
    return pid.readInt32LE(0);
  } finally {
    attrDestroy(attr);
    faDestroy(fa);
  }
}
