// Dirty-page tracking, for pre-copy migration and incremental dumps: which pages a process wrote
// since a point in time. A userfaultfd in async write-protect mode is made inside the frozen process
// by a remote syscall, taken out with pidfd_getfd (the process keeps no descriptor of it) and
// registered over the process's private anonymous VMAs. A write to a protected page then only
// clears the page's protection, in the kernel, without waking anyone; PAGEMAP_SCAN reports the
// pages written (PAGE_IS_WRITTEN) and write-protects them again in the same walk. Closing the
// tracker's descriptor unregisters it all.
import { closeSync, readlinkSync } from 'node:fs';
import { FerryError } from '../errors.js';
import { isErrno } from '../sys/errno.js';
import { O } from '../sys/fcntl.js';
import { NR } from '../sys/nr.js';
import { pidfdGetfd, pidfdOpen } from '../sys/pidfd.js';
import { UFFD_FEATURE, UFFD_USER_MODE_ONLY, uffdApi, uffdRegisterWp } from '../sys/uffd.js';
import type { PartSummary } from '../image/sink.js';
import type { LayerRecord, ParentRecord } from '../image/manifest.js';
import type { RemoteSyscalls } from '../tracee/remote.js';
import { openWrittenScanner, type PageScanner } from '../vma/pages.js';
import { pushSpan, type Span } from '../vma/spans.js';
import type { Vma, VmaKind } from '../vma/vma.js';

/** Kinds of VMA whose writes are tracked: private memory (anonymous, or a program's data). */
const TRACKED_KINDS = new Set<VmaKind>(['bss', 'heap', 'stack', 'anon', 'data']);
/** The VmFlags mnemonic (smaps) of a VMA registered for userfaultfd write-protection. */
const UFFD_WP_FLAG = 'uw';

/** The spans of `vmas` a tracker watches (registered for write-protection), merged where they touch. */
export function trackedSpans(vmas: readonly Pick<Vma, 'start' | 'end' | 'vmFlags'>[]): Span[] {
  const out: Span[] = [];
  for (const v of vmas) if (v.vmFlags.includes(UFFD_WP_FLAG)) pushSpan(out, v.start, v.end);
  return out;
}

export class DirtyTracker {
  private closed = false;

  private constructor(
    readonly pid: number,
    private readonly fd: number,
    /** The descriptor the process itself holds (dump --track-mem), which keeps tracking on after ferry. */
    readonly inProcessFd: number | undefined,
  ) {}

  /**
   * Start tracking writes to the private VMAs among `vmas` of the process frozen behind `remote`.
   * Every page present now counts as written until the first scan that protects it. With
   * `keepInProcess` the process keeps a descriptor of the tracker (`inProcessFd`).
   */
  static start(remote: RemoteSyscalls, vmas: readonly Vma[], keepInProcess = false): DirtyTracker {
    const pid = remote.pid;
    const inProcess = Number(
      remote.check('userfaultfd', NR.userfaultfd, O.CLOEXEC | O.NONBLOCK | UFFD_USER_MODE_ONLY),
    );
    let fd: number;
    try {
      fd = copyFd(pid, inProcess);
    } finally {
      if (!keepInProcess) remote.check('close', NR.close, inProcess);
    }
    const tracker = new DirtyTracker(pid, fd, keepInProcess ? inProcess : undefined);
    try {
      const wanted = UFFD_FEATURE.WP_ASYNC | UFFD_FEATURE.WP_UNPOPULATED;
      try {
        uffdApi(fd, wanted);
      } catch (err) {
        throw new FerryError(
          'FERRY_UNSUPPORTED',
          'dirty-page tracking needs userfaultfd write-protection in async mode (Linux 6.7+; see ferry check)',
          { cause: err },
        );
      }
      for (const v of vmas) {
        if (v.perms[3] !== 'p' || !TRACKED_KINDS.has(v.kind)) continue;
        try {
          uffdRegisterWp(fd, v.start, v.end - v.start);
        } catch (err) {
          // A VMA that cannot be registered stays untracked: its pages are all sent at the end.
          if (!isErrno(err, 'EINVAL', 'EPERM', 'EBUSY')) throw err;
        }
      }
    } catch (err) {
      tracker.close();
      throw err;
    }
    return tracker;
  }

  /** The tracker a process holds as descriptor `fd` (left by an earlier dump --track-mem). */
  static adopt(pid: number, fd: number): DirtyTracker {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      target = 'nothing';
    }
    if (target !== 'anon_inode:[userfaultfd]') {
      throw new FerryError(
        'FERRY_TRACKING_LOST',
        `process ${pid}'s dirty-page tracker (fd ${fd}) is gone (the fd is ${target}): dump with --track-mem and without --parent to start again`,
      );
    }
    return new DirtyTracker(pid, copyFd(pid, fd), fd);
  }

  /**
   * A scanner reporting the pages written since they were last protected; with `protect`, each
   * page it reports is protected again (so the next scan reports only later writes).
   */
  scanner(protect: boolean): PageScanner {
    return openWrittenScanner(this.pid, protect);
  }

  /** The written pages in `spans`, as spans; with `protect`, protected again. */
  written(spans: readonly Span[], protect: boolean): Span[] {
    const out: Span[] = [];
    const scanner = this.scanner(protect);
    try {
      for (const s of spans) scanner.scan(s, (run) => pushSpan(out, run.start, run.end));
    } finally {
      scanner.close();
    }
    return out;
  }

  /** Stop tracking: the process's VMAs are unregistered as the descriptor closes. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}

/** Copy descriptor `fd` of process `pid` into this process. */
function copyFd(pid: number, fd: number): number {
  const pidfd = pidfdOpen(pid);
  try {
    return pidfdGetfd(pidfd, fd);
  } finally {
    closeSync(pidfd);
  }
}

/**
 * What a dump builds on: the pages earlier layers hold and the tracker that knows which of them the
 * process wrote since.
 */
export interface Baseline {
  tracker: DirtyTracker;
  /** Pages the earlier layers hold (data or zero), sorted. */
  held: Span[];
  /** The image's own earlier layers, already written through the same sink, and their parts. */
  layers: LayerRecord[];
  parts: Record<string, PartSummary>;
  /** The image the earlier layers belong to, for an incremental dump; null for one image. */
  parent: ParentRecord | null;
}
