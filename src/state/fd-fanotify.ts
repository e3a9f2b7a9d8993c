// fanotify: the instance's flags and its marks, from the `fanotify` records of its fdinfo: on an
// inode (its path found from the handle fdinfo shows, as for inotify), on a mount (its mount point,
// by mount ID) or on a filesystem (a mount of it), each with its event mask, ignore mask and flags.
// Restore makes the instance again with fanotify_init and adds each mark with fanotify_mark.
// Events queued and not read at dump time are not kept (the dump warns).
import { FerryError } from '../errors.js';
import { array, integer, object, oneOf, string, type Infer } from '../image/schema.js';
import { readProcText } from '../proc/files.js';
import { parseFanotify } from '../proc/fanotify.js';
import { parseMountinfo } from '../proc/mountinfo.js';
import { AT_FDCWD, O } from '../sys/fcntl.js';
import { NR } from '../sys/nr.js';
import type { RemoteCall } from '../tracee/remote.js';
import { unsupportedMessage } from './context.js';
import { warnUnread, watchPaths } from './fd-inotify.js';
import type { FdKind } from './fd-kind.js';

const FAN_NONBLOCK = 0x2;
const FAN_MARK = {
  ADD: 0x1,
  MOUNT: 0x10,
  IGNORED_MASK: 0x20,
  IGNORED_SURV_MODIFY: 0x40,
  FILESYSTEM: 0x100,
  EVICTABLE: 0x200,
  IGNORE: 0x400,
} as const;

const markRecord = object({
  kind: oneOf(['inode', 'mount', 'filesystem'] as const),
  path: string({ max: 4096 }),
  /** FAN_MARK_IGNORED_SURV_MODIFY, FAN_MARK_EVICTABLE, FAN_MARK_IGNORE, as fdinfo shows them. */
  mflags: integer(0, 2 ** 32 - 1),
  mask: integer(0, 2 ** 32 - 1),
  ignoredMask: integer(0, 2 ** 32 - 1),
});

const record = object({
  fd: integer(0, 1 << 20),
  flags: integer(0, 2 ** 31 - 1),
  /** fanotify_init's flags (FAN_CLASS_*, FAN_REPORT_*, ...) and event_f_flags. */
  initFlags: integer(0, 2 ** 32 - 1),
  eventFlags: integer(0, 2 ** 32 - 1),
  marks: array(markRecord, { max: 1 << 16 }),
});
type FanotifyRecord = Infer<typeof record>;

export const fdFanotify: FdKind<'fanotify', FanotifyRecord> = {
  kind: 'fanotify',
  record,
  matches: (info) => info.target === 'anon_inode:[fanotify]',
  dump(ctx, info) {
    const source = `/proc/${ctx.pid}/fdinfo/${info.fd}`;
    const state = parseFanotify(
      info.fdinfo.records.filter((r) => r.key === 'fanotify').map((r) => r.value),
      source,
    );
    const inodes = state.marks.flatMap((m, i) => (m.kind === 'inode' ? [{ ...m, wd: i + 1 }] : []));
    const paths = new Map(inodes.map((m, i) => [m.wd, watchPaths(ctx, info.fd, inodes)[i]!]));
    const mounts = parseMountinfo(readProcText(ctx.pid, 'mountinfo'), `/proc/${ctx.pid}/mountinfo`);
    const marks = state.marks.map((m, i) => {
      const mount =
        m.kind === 'mount'
          ? mounts.find((x) => x.id === m.mntId)
          : m.kind === 'filesystem'
            ? (mounts.find((x) => x.major === m.major && x.minor === m.minor && x.root === '/') ??
              mounts.find((x) => x.major === m.major && x.minor === m.minor))
            : undefined;
      if (m.kind !== 'inode' && !mount)
        throw new FerryError(
          'FERRY_UNSUPPORTED_STATE',
          unsupportedMessage(
            ctx.pid,
            `fd ${info.fd} (fanotify) marks a ${m.kind}`,
            'that no mount of the process shows',
          ),
        );
      return {
        kind: m.kind,
        path: m.kind === 'inode' ? paths.get(i + 1)! : mount!.mountPoint,
        mflags: m.mflags,
        mask: m.mask,
        ignoredMask: m.ignoredMask,
      };
    });
    warnUnread(ctx, info.fd, 'fanotify');
    return {
      fd: info.fd,
      flags: info.fdinfo.flags,
      initFlags: state.flags,
      eventFlags: state.eventFlags,
      marks,
    };
  },
  restore(ctx, rec, fds) {
    const remote = ctx.remote;
    const made = fds.create({
      name: 'fanotify_init',
      nr: NR.fanotify_init,
      args: [rec.initFlags | (rec.flags & O.NONBLOCK ? FAN_NONBLOCK : 0), rec.eventFlags],
    });
    for (const m of rec.marks) {
      const kind = m.kind === 'mount' ? FAN_MARK.MOUNT : m.kind === 'filesystem' ? FAN_MARK.FILESYSTEM : 0;
      const evictable = m.mflags & FAN_MARK.EVICTABLE;
      const mark = (flags: number, mask: number): RemoteCall => ({
        name: `fanotify_mark(${m.path}, 0x${flags.toString(16)}, 0x${mask.toString(16)})`,
        nr: NR.fanotify_mark,
        args: [made, flags, mask, AT_FDCWD, remote.putString(m.path)],
      });
      if (m.mask !== 0) fds.call(mark(FAN_MARK.ADD | kind | evictable, m.mask));
      if (m.ignoredMask !== 0) {
        const ignore = m.mflags & FAN_MARK.IGNORE ? FAN_MARK.IGNORE : FAN_MARK.IGNORED_MASK;
        const flags = FAN_MARK.ADD | kind | evictable | ignore | (m.mflags & FAN_MARK.IGNORED_SURV_MODIFY);
        fds.call(mark(flags, m.ignoredMask));
      }
    }
    fds.place(rec.fd, made, rec.flags);
  },
};
