// inotify: each watch's path and event mask. fdinfo names a watched file by its handle, which
// open_by_handle_at turns into a path, on a mount of the filesystem the watch's device is. A file
// deleted since is watched through a descriptor of the process that holds it open (its watch lives
// only while someone does): the restored descriptor's file gets the watch, through /proc/self/fd.
// Restore adds the watches again under the numbers (wd) they had: a new instance numbers them from
// 1 up, one more each time, so a gap is crossed by adding a watch and removing it again. Events
// queued and not read at dump time are not kept (the dump warns).
import { closeSync, openSync, statSync } from 'node:fs';
import { FerryError } from '../errors.js';
import { array, integer, nullable, object, string, type Infer } from '../image/schema.js';
import { readProcText } from '../proc/files.js';
import { parseInotifyWatches, type InotifyWatch } from '../proc/inotify.js';
import { parseMountinfo, type Mount } from '../proc/mountinfo.js';
import { O } from '../sys/fcntl.js';
import { pathOfHandle } from '../sys/handle.js';
import { NR } from '../sys/nr.js';
import type { RemoteCall } from '../tracee/remote.js';
import { asUser, unsupportedMessage } from './context.js';
import { major, minor, type FdKind, type FilesDumpContext, type FilesRestoreContext } from './fd-kind.js';

const FIONREAD = 0x541b;
const DELETED = ' (deleted)';

const watchRecord = object({
  wd: integer(1, 2 ** 31 - 1),
  path: string({ max: 4096 }),
  mask: integer(0, 2 ** 32 - 1),
  /** The descriptor of the process through which a deleted file is watched, else null. */
  via: nullable(integer(0, 1 << 20)),
});

const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  watches: array(watchRecord, { max: 1 << 20 }),
});
type InotifyRecord = Infer<typeof record>;

/** A mount of the filesystem of device major:minor, the one showing its whole tree if there is one. */
function mountOf(mounts: readonly Mount[], w: Pick<InotifyWatch, 'major' | 'minor'>): Mount | undefined {
  const on = mounts.filter((m) => m.major === w.major && m.minor === w.minor);
  return on.find((m) => m.root === '/') ?? on[0];
}

/** What names a watched file: its inode and device, and its handle. */
export type HandleMark = Pick<InotifyWatch, 'wd' | 'ino' | 'major' | 'minor' | 'handleType' | 'handle'>;

/**
 * The path of each watched file, from its handle (inotify watches, fanotify inode marks). A deleted
 * one is refused unless `deleted` says what to do with it (its path ends in " (deleted)").
 */
export function watchPaths(
  ctx: FilesDumpContext,
  fd: number,
  watches: readonly HandleMark[],
  deleted?: (w: HandleMark, path: string) => string,
): string[] {
  const refuse = (w: HandleMark, why: string): never => {
    throw new FerryError(
      'FERRY_UNSUPPORTED_STATE',
      unsupportedMessage(ctx.pid, `fd ${fd} watches inode ${w.ino} (mark ${w.wd}), which`, why),
    );
  };
  const mounts = parseMountinfo(readProcText(ctx.pid, 'mountinfo'), `/proc/${ctx.pid}/mountinfo`);
  const opened = new Map<Mount, number>();
  try {
    return watches.map((w) => {
      const mount =
        mountOf(mounts, w) ?? refuse(w, `is on device ${w.major}:${w.minor}, which no mount shows`);
      let mountFd = opened.get(mount);
      if (mountFd === undefined) {
        mountFd = openSync(`/proc/${ctx.pid}/root${mount.mountPoint}`, O.RDONLY | O.CLOEXEC);
        opened.set(mount, mountFd);
      }
      let path: string;
      try {
        path = pathOfHandle(mountFd, w.handleType, w.handle);
      } catch {
        return refuse(w, 'ferry cannot open by its handle (it is gone?)');
      }
      if (path.endsWith(DELETED)) return deleted?.(w, path) ?? refuse(w, 'has been deleted');
      return path;
    });
  } finally {
    for (const mountFd of opened.values()) closeSync(mountFd);
  }
}

/** Say how many bytes of events `fd` (of kind `what`) holds unread: a dump does not keep them. */
export function warnUnread(ctx: FilesDumpContext, fd: number, what: string): void {
  const pending = queued(ctx, fd);
  if (pending > 0)
    ctx.warn(
      `process ${ctx.pid}: fd ${fd} (${what}) has ${pending} bytes of events unread, which are dropped`,
    );
}

/** Bytes of events queued and not read yet, asked inside the process. */
function queued(ctx: FilesDumpContext, fd: number): number {
  const at = ctx.remote.put(Buffer.alloc(4));
  ctx.remote.check('ioctl(FIONREAD)', NR.ioctl, fd, FIONREAD, at);
  return ctx.remote.read(at, 4).readInt32LE(0);
}

export const fdInotify: FdKind<'inotify', InotifyRecord> = {
  kind: 'inotify',
  record,
  matches: (info) => info.target === 'anon_inode:inotify',
  dump(ctx, info) {
    const source = `/proc/${ctx.pid}/fdinfo/${info.fd}`;
    const records = info.fdinfo.records.filter((r) => r.key === 'inotify').map((r) => r.value);
    const watches = parseInotifyWatches(records, source);
    const via = new Map<number, number>();
    const paths = watchPaths(ctx, info.fd, watches, (w, path) => {
      const fd = holder(ctx, w) ?? refuseDeleted(ctx, info.fd, w);
      via.set(w.wd, fd);
      return path.slice(0, -DELETED.length);
    });
    warnUnread(ctx, info.fd, 'inotify');
    return {
      fd: info.fd,
      flags: info.fdinfo.flags,
      watches: watches.map((w, i) => ({
        wd: w.wd,
        path: paths[i]!,
        mask: w.mask,
        via: via.get(w.wd) ?? null,
      })),
    };
  },
  restore(ctx, rec, fds) {
    const made = fds.create({ name: 'inotify_init1', nr: NR.inotify_init1, args: [rec.flags & O.NONBLOCK] });
    fds.flush();
    fds.place(rec.fd, made, rec.flags);
    // A deleted file is watched through its descriptor, in place only once every one is: then all
    // the watches are added, in order, after the placing (their paths kept till then).
    if (rec.watches.some((w) => w.via !== null))
      addWatches(ctx, rec, rec.fd, (calls) => calls.forEach((c) => fds.after(c)));
    else addWatches(ctx, rec, made, (calls) => ctx.remote.batch(calls), true);
  },
};

/**
 * Add `rec`'s watches to the instance at `fd`, each under its number: a number no watch had is
 * crossed by adding the next watch and removing it again. `run` runs each watch's calls, now
 * (`scoped`: each in scratch memory of its own; its result checked here) or after the placing.
 */
function addWatches(
  ctx: FilesRestoreContext,
  rec: InotifyRecord,
  fd: number,
  run: (calls: RemoteCall[]) => bigint[] | void,
  scoped = false,
): void {
  const remote = ctx.remote;
  let next = 1;
  for (const w of rec.watches) {
    const one = (): void => {
      const path = w.via === null ? w.path : `/proc/self/fd/${w.via}`;
      // A watch is added with the process's file credentials (asUser()).
      const add = asUser(ctx, {
        name: `inotify_add_watch(${w.path})`,
        nr: NR.inotify_add_watch,
        args: [fd, remote.putString(path), w.mask],
      });
      const calls: RemoteCall[] = [];
      for (; next < w.wd; next++)
        calls.push(...add.calls, {
          name: `inotify_rm_watch(${next})`,
          nr: NR.inotify_rm_watch,
          args: [fd, next],
        });
      const got = run([...calls, ...add.calls])?.[calls.length + add.at];
      if (got !== undefined && got !== BigInt(w.wd))
        throw new FerryError(
          'FERRY_RESTORE_FAILED',
          `fd ${rec.fd} (inotify): ${w.path} came back as watch ${got}, not ${w.wd}`,
        );
      next++;
    };
    if (scoped) remote.withData(one);
    else one();
  }
}

/** The descriptor of the process open on watched file `w` (its inode and device), if one is. */
function holder(ctx: FilesDumpContext, w: HandleMark): number | undefined {
  for (const [fd, info] of ctx.fds) {
    if (!info.target.endsWith(DELETED)) continue;
    try {
      const { ino, dev } = statSync(`/proc/${ctx.pid}/fd/${fd}`, { bigint: true });
      if (ino === w.ino && major(Number(dev)) === w.major && minor(Number(dev)) === w.minor) return fd;
    } catch {
      // closed meanwhile: not this one
    }
  }
  return undefined;
}

function refuseDeleted(ctx: FilesDumpContext, fd: number, w: HandleMark): never {
  throw new FerryError(
    'FERRY_UNSUPPORTED_STATE',
    unsupportedMessage(
      ctx.pid,
      `fd ${fd} watches inode ${w.ino} (mark ${w.wd}), which`,
      'has been deleted and is open under no descriptor of the process',
    ),
  );
}
