// inotify: each watch's path and event mask. fdinfo names a watched file by its handle, which
// open_by_handle_at turns into a path, on a mount of the filesystem the watch's device is. Restore
// adds the watches again under the numbers (wd) they had: a new instance numbers them from 1 up, one
// more each time, so a gap is crossed by adding a watch and removing it again. Events queued and
// not read at dump time are not kept (the dump warns).
import { closeSync, openSync } from 'node:fs';
import { FerryError } from '../errors.js';
import { array, integer, object, string, type Infer } from '../image/schema.js';
import { readProcText } from '../proc/files.js';
import { parseInotifyWatches, type InotifyWatch } from '../proc/inotify.js';
import { parseMountinfo, type Mount } from '../proc/mountinfo.js';
import { O } from '../sys/fcntl.js';
import { pathOfHandle } from '../sys/handle.js';
import { NR } from '../sys/nr.js';
import type { RemoteCall } from '../tracee/remote.js';
import { asUser, unsupportedMessage } from './context.js';
import type { FdKind, FilesDumpContext } from './fd-kind.js';

const FIONREAD = 0x541b;
const DELETED = ' (deleted)';

const watchRecord = object({
  wd: integer(1, 2 ** 31 - 1),
  path: string({ max: 4096 }),
  mask: integer(0, 2 ** 32 - 1),
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

/** The path of each watched file, from its handle (inotify watches, fanotify inode marks). */
export function watchPaths(ctx: FilesDumpContext, fd: number, watches: readonly HandleMark[]): string[] {
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
      if (path.endsWith(DELETED)) refuse(w, 'has been deleted');
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
    const paths = watchPaths(ctx, info.fd, watches);
    warnUnread(ctx, info.fd, 'inotify');
    return {
      fd: info.fd,
      flags: info.fdinfo.flags,
      watches: watches.map((w, i) => ({ wd: w.wd, path: paths[i]!, mask: w.mask })),
    };
  },
  restore(ctx, rec, fds) {
    const remote = ctx.remote;
    const made = fds.create({ name: 'inotify_init1', nr: NR.inotify_init1, args: [rec.flags & O.NONBLOCK] });
    fds.flush();
    // Numbers are handed out from 1 up, one more each time: a number no watch had is crossed by
    // adding the next watch and removing it again.
    let next = 1;
    for (const w of rec.watches) {
      remote.withData(() => {
        // A watch is added with the process's file credentials (asUser()).
        const add = asUser(ctx, {
          name: `inotify_add_watch(${w.path})`,
          nr: NR.inotify_add_watch,
          args: [made, remote.putString(w.path), w.mask],
        });
        const calls: RemoteCall[] = [];
        for (; next < w.wd; next++)
          calls.push(...add.calls, {
            name: `inotify_rm_watch(${next})`,
            nr: NR.inotify_rm_watch,
            args: [made, next],
          });
        const got = remote.batch([...calls, ...add.calls])[calls.length + add.at];
        if (got !== BigInt(w.wd))
          throw new FerryError(
            'FERRY_RESTORE_FAILED',
            `fd ${rec.fd} (inotify): ${w.path} came back as watch ${got}, not ${w.wd}`,
          );
        next++;
      });
    }
    fds.place(rec.fd, made, rec.flags);
  },
};
