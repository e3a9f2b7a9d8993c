// The descriptor table. One registry lists the kinds of descriptor ferry can save; anything else is
// refused at dump time, naming the descriptor and what it is.
import { readdirSync, statSync } from 'node:fs';
import { FerryError } from '../errors.js';
import { array, tagged, type Infer } from '../image/schema.js';
import { parseFdinfo } from '../proc/fdinfo.js';
import { listProcDir, procError, readProcLink, readProcText } from '../proc/files.js';
import { NR } from '../sys/nr.js';
import type { RemoteCall } from '../tracee/remote.js';
import { expectFd, unsupportedMessage, type DumpContext } from './context.js';
import { fdChardev } from './fd-chardev.js';
import { fdFile } from './fd-file.js';
import { major, minor, type FdInfo, type FilesRestoreContext } from './fd-kind.js';
import { AT_FDCWD, O } from '../sys/fcntl.js';
import { fdTty } from './fd-tty.js';

/** Every kind of descriptor ferry saves, tried in this order. */
export const FD_KINDS = [fdTty, fdChardev, fdFile] as const;

type Kinds = (typeof FD_KINDS)[number];
type Variants = { [K in Kinds as K['kind']]: K['record'] };

export const filesRecord = array(
  tagged('kind', Object.fromEntries(FD_KINDS.map((k) => [k.kind, k.record])) as Variants),
  { max: 1 << 20 },
);
export type FilesRecord = Infer<typeof filesRecord>;
export type FdRecord = FilesRecord[number];

const SEEK_SET = 0;

/** What an unsupported descriptor is, in words. */
function describeFd(info: FdInfo): string {
  const anon = /^anon_inode:\[?([^\]]+)\]?$/.exec(info.target);
  if (anon) return `an ${anon[1]} descriptor (${info.target})`;
  if (info.target.startsWith('pipe:')) return `a pipe (${info.target})`;
  if (info.target.startsWith('socket:')) return `a socket (${info.target})`;
  if (info.target.startsWith('/memfd:')) return `a memfd (${info.target})`;
  if (info.stat.isFIFO()) return `a FIFO (${info.target})`;
  if (info.stat.isCharacterDevice()) {
    return `the character device ${info.target} (${major(info.stat.rdev)}:${minor(info.stat.rdev)}), whose state ferry cannot save`;
  }
  if (info.stat.isBlockDevice()) return `the block device ${info.target}`;
  return `${info.target}`;
}

function fdInfo(pid: number, fd: number): FdInfo {
  const target = readProcLink(pid, `fd/${fd}`);
  let stat;
  try {
    stat = statSync(`/proc/${pid}/fd/${fd}`);
  } catch (err) {
    return procError(pid, `fd/${fd}`, err);
  }
  return {
    fd,
    target,
    stat,
    fdinfo: parseFdinfo(readProcText(pid, `fdinfo/${fd}`), `/proc/${pid}/fdinfo/${fd}`),
  };
}

export function dumpFiles(ctx: DumpContext): FilesRecord {
  const fds = listProcDir(ctx.pid, 'fd')
    .map(Number)
    .filter((fd) => !ctx.trackerFds.includes(fd))
    .sort((a, b) => a - b);
  return fds.map((fd) => {
    const info = fdInfo(ctx.pid, fd);
    const kind = FD_KINDS.find((k) => k.matches(info));
    if (!kind) {
      throw new FerryError(
        'FERRY_UNSUPPORTED_STATE',
        unsupportedMessage(ctx.pid, `fd ${fd} is`, `${describeFd(info)}, which ferry cannot checkpoint yet`),
      );
    }
    return { kind: kind.kind, ...kind.dump(ctx, info) } as FdRecord;
  });
}

function kindOf(rec: FdRecord): Kinds {
  return FD_KINDS.find((k) => k.kind === rec.kind)!;
}

/**
 * Give the stub every descriptor, at its number. Each is opened at the lowest free descriptor (the
 * stub has no other), moved to its number with dup3, and sought to its position.
 */
export function restoreFiles(ctx: FilesRestoreContext, recs: FilesRecord): void {
  const open = new Set(readdirSync(`/proc/${ctx.pid}/fd`).map(Number));
  const calls: RemoteCall[] = [];
  const predicted: { call: number; fd: number; what: string }[] = [];
  for (const rec of [...recs].sort((a, b) => a.fd - b.fd)) {
    const spec = (kindOf(rec).reopen as (c: FilesRestoreContext, r: FdRecord) => ReturnType<Kinds['reopen']>)(
      ctx,
      rec,
    );
    let tmp = 0;
    while (open.has(tmp)) tmp++;
    const cloexec = spec.flags & O.CLOEXEC;
    predicted.push({ call: calls.length, fd: tmp, what: `open(${spec.path})` });
    calls.push({
      name: `open(${spec.path})`,
      nr: NR.openat,
      args: [AT_FDCWD, ctx.remote.putString(spec.path), spec.flags, 0],
    });
    if (tmp !== rec.fd) {
      calls.push({ name: `dup3(${tmp}, ${rec.fd})`, nr: NR.dup3, args: [tmp, rec.fd, cloexec] });
      calls.push({ name: `close(${tmp})`, nr: NR.close, args: [tmp] });
    }
    open.add(rec.fd);
    if (spec.pos !== null && spec.pos > 0n) {
      calls.push({ name: `lseek(${rec.fd})`, nr: NR.lseek, args: [rec.fd, spec.pos, SEEK_SET] });
    }
  }
  const results = ctx.remote.batch(calls);
  for (const p of predicted) expectFd(results[p.call], p.fd, p.what);
}
