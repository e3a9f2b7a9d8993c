// `ferry check`: what this kernel and these privileges offer. Every feature is probed for real (a
// call that succeeds or fails), on a stub process spawned for the purpose, never guessed from the
// kernel version.
import { closeSync, openSync, readFileSync, readlinkSync } from 'node:fs';
import { release } from 'node:os';
import { FerryError } from './errors.js';
import { readProcText } from './proc/files.js';
import { parseMaps } from './proc/maps.js';
import { parseStat } from './proc/stat.js';
import { parseStatus } from './proc/status.js';
import { clone3In } from './stub/restore-stub.js';
import { spawnStub, STUB_BASE } from './stub/stub.js';
import { CLONE } from './sys/clone.js';
import { errnoName } from './sys/errno.js';
import { NR } from './sys/nr.js';
import { PAGE_IS, PAGE_REGION_SIZE, pagemapScan } from './sys/pagemap-scan.js';
import { PR, PR_SET_MM } from './sys/prctl.js';
import { processVmReadv } from './sys/process-vm.js';
import { PROCMAP_QUERY_COVERING_OR_NEXT_VMA, procmapQuery } from './sys/procmap-query.js';
import { PTRACE_O, ptraceGetRseqConfiguration, ptraceSetOptions } from './sys/ptrace.js';
import { kill, SIG } from './sys/signal.js';
import { probeUffdFeatures, UFFD_FEATURE } from './sys/uffd.js';
import { LAZY_FEATURES } from './memory/lazy.js';
import { waitpid } from './sys/wait.js';
import { hasSystemXxh3 } from './sys/xxhash.js';
import { RemoteSyscalls } from './tracee/remote.js';
import { Tracee } from './tracee/tracee.js';
import { kernelTracksSoftDirty } from './vma/pages.js';
import { checkNft } from './state/netlock.js';

const SCRATCH_SIZE = 1 << 16;

/** Capability bit numbers (linux/capability.h). */
export const CAP = { SYS_PTRACE: 19, SYS_ADMIN: 21, SYS_RESOURCE: 24, CHECKPOINT_RESTORE: 40 } as const;

export interface FeatureReport {
  id: string;
  /** Present and usable by this process. */
  available: boolean;
  /** What the probe saw: a value, or why it failed. */
  detail: string;
  usedFor: string;
  /** What degrades, or what cannot work, without it. */
  without: string;
  /** Checkpoint/restore cannot work here without it. */
  required: boolean;
}

export type DirtyTracking = 'uffd-wp-async' | 'soft-dirty' | 'page-hashes';

export interface CheckReport {
  kernel: string;
  features: FeatureReport[];
  /** How pre-copy migration and incremental dumps find written pages on this host. */
  dirtyTracking: DirtyTracking;
  /** Every required feature is available. */
  ok: boolean;
}

interface ProbeContext {
  stubPid: number;
  tracee?: Tracee;
  remote?: RemoteSyscalls;
  capEffective: bigint;
}

type ProbeResult = { ok: boolean; detail: string };

interface Probe {
  id: string;
  usedFor: string;
  without: string;
  required: boolean;
  run(ctx: ProbeContext): ProbeResult;
}

const ok = (detail: string): ProbeResult => ({ ok: true, detail });
const no = (detail: string): ProbeResult => ({ ok: false, detail });

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function remoteOf(ctx: ProbeContext): RemoteSyscalls {
  if (!ctx.remote) throw new FerryError('FERRY_UNSUPPORTED', 'needs ptrace seize, which failed');
  return ctx.remote;
}

function capability(bit: number, name: string, usedFor: string, without: string, required: boolean): Probe {
  return {
    id: `CAP_${name}`,
    usedFor,
    without,
    required,
    run: (ctx) => ((ctx.capEffective >> BigInt(bit)) & 1n ? ok('held') : no('not in the effective set')),
  };
}

const PROBES: Probe[] = [
  {
    id: 'ptrace-seize',
    usedFor: 'freezing a process: PTRACE_SEIZE and PTRACE_INTERRUPT on every thread',
    without: 'nothing can be checkpointed or restored',
    required: true,
    run(ctx) {
      ctx.tracee = Tracee.freeze(ctx.stubPid, { disposable: true });
      ctx.remote = RemoteSyscalls.open(ctx.tracee);
      ctx.remote.installScratch({ size: SCRATCH_SIZE });
      const pid = ctx.remote.call(NR.getpid);
      return pid === BigInt(ctx.stubPid)
        ? ok('seized, interrupted, ran a remote syscall')
        : no(`getpid gave ${pid}`);
    },
  },
  {
    id: 'process_vm_readv',
    usedFor: 'reading a frozen process memory in large batches',
    without: 'memory is read through /proc/PID/mem, more slowly',
    required: false,
    run(ctx) {
      const buf = Buffer.alloc(4);
      processVmReadv(ctx.stubPid, buf, [{ addr: STUB_BASE, len: 4 }]);
      return buf.toString('latin1') === '\x7fELF' ? ok('read the stub code') : no('read the wrong bytes');
    },
  },
  {
    id: 'map_files',
    usedFor: 'opening the exact file behind a mapping, deleted files and memfds included',
    without: 'mappings of deleted files and memfds cannot be saved',
    required: false,
    run(ctx) {
      const code = parseMaps(readProcText(ctx.stubPid, 'maps')).find((m) => m.start === STUB_BASE)!;
      const link = readlinkSync(
        `/proc/${ctx.stubPid}/map_files/${code.start.toString(16)}-${code.end.toString(16)}`,
      );
      return ok(`resolved ${link}`);
    },
  },
  {
    id: 'PAGEMAP_SCAN',
    usedFor: 'finding present, swapped and written pages of a whole address space in a few ioctls',
    without: 'pagemap is read 8 bytes per page (1 MiB per read), and uffd-wp dirty tracking is off',
    required: false,
    run(ctx) {
      const fd = openSync(`/proc/${ctx.stubPid}/pagemap`, 'r');
      try {
        const vec = Buffer.alloc(16 * PAGE_REGION_SIZE);
        const { regions } = pagemapScan(
          fd,
          {
            start: STUB_BASE,
            end: STUB_BASE + 0x1000n,
            categoryAnyof: PAGE_IS.PRESENT,
            returnMask: PAGE_IS.PRESENT,
          },
          vec,
        );
        return ok(`${regions.length} region(s) of present pages in the stub code`);
      } finally {
        closeSync(fd);
      }
    },
  },
  {
    id: 'uffd-wp-async',
    usedFor: 'dirty-page tracking for pre-copy migration and incremental dumps (with PAGEMAP_SCAN)',
    without: 'dirty tracking falls back to page hashes (each scan reads and hashes every tracked page)',
    required: false,
    run() {
      const wanted = UFFD_FEATURE.WP_ASYNC | UFFD_FEATURE.WP_UNPOPULATED;
      const got = probeUffdFeatures(wanted);
      return (got & wanted) === wanted
        ? ok('UFFD_FEATURE_WP_ASYNC and WP_UNPOPULATED')
        : no('features missing');
    },
  },
  {
    id: 'uffd-copy',
    usedFor: 'restoring long runs of anonymous memory with UFFDIO_COPY (each page made with its bytes)',
    without:
      'process_vm_writev writes all of it (a third slower here: fresh pages are zeroed, then faulted in)',
    required: false,
    run() {
      // The handshake a restore's copier makes (no features asked), on a fresh descriptor.
      probeUffdFeatures(0n);
      return ok('userfaultfd opens and answers UFFDIO_API');
    },
  },
  {
    id: 'uffd-lazy',
    usedFor:
      'post-copy: migrate --mode post-copy and restore --lazy (pages served on fault, a fork, mremap or madvise followed)',
    without: 'post-copy and lazy restores are refused; stop-copy and pre-copy work',
    required: false,
    run() {
      const got = probeUffdFeatures(LAZY_FEATURES);
      return (got & LAZY_FEATURES) === LAZY_FEATURES
        ? ok('UFFD_FEATURE_EVENT_FORK, EVENT_REMAP, EVENT_REMOVE and EVENT_UNMAP')
        : no('features missing');
    },
  },
  {
    id: 'libxxhash',
    usedFor: "checking an image's page data on every CPU at once at restore (XXH3 of each 4 MiB)",
    without: 'one CPU hashes it all (the @node-rs/xxhash package)',
    required: false,
    run() {
      return hasSystemXxh3()
        ? ok('libxxhash.so.0 opens')
        : no('libxxhash.so.0 is not installed (Debian: libxxhash0)');
    },
  },
  {
    id: 'soft-dirty',
    usedFor: "dirty-page tracking where userfaultfd cannot (Linux before 6.7): the kernel's soft-dirty bits",
    without: 'page hashes, when userfaultfd cannot track writes either',
    required: false,
    run() {
      return kernelTracksSoftDirty()
        ? ok('written page carries the soft-dirty bit')
        : no('CONFIG_MEM_SOFT_DIRTY is off');
    },
  },
  {
    id: 'PROCMAP_QUERY',
    usedFor: 'looking up one VMA by address without reading the whole maps file',
    without: 'none: ferry reads and parses /proc/PID/maps (the only method it uses today)',
    required: false,
    run(ctx) {
      const fd = openSync(`/proc/${ctx.stubPid}/maps`, 'r');
      try {
        const vma = procmapQuery(fd, STUB_BASE, PROCMAP_QUERY_COVERING_OR_NEXT_VMA);
        return ok(`found 0x${vma.start.toString(16)}-0x${vma.end.toString(16)}`);
      } finally {
        closeSync(fd);
      }
    },
  },
  {
    id: 'clone3-set_tid',
    usedFor: 'restoring a process under its original PID',
    without:
      'the PID is had through ns_last_pid where writable (which moves the namespace PID counter back), else a new PID is used',
    required: false,
    run(ctx) {
      // Ask, as a restore does, for the stub's own PID, which is taken: EEXIST proves the kernel
      // would honour set_tid.
      const ret = clone3In(remoteOf(ctx), CLONE.PARENT, 0, ctx.stubPid);
      if (ret === -17n) return ok('set_tid honoured (EEXIST for a PID in use)');
      if (ret > 0n) {
        kill(Number(ret), SIG.SIGKILL);
        waitpid(Number(ret), 0); // this process's child (CLONE_PARENT)
        return ok(`created PID ${ret}`);
      }
      return no(`clone3 failed with ${errnoName(Number(-ret))}`);
    },
  },
  {
    id: 'PTRACE_GET_RSEQ_CONFIGURATION',
    usedFor: "saving each thread's restartable-sequences registration",
    without: 'rseq registrations are not restored (glibc then reads a stale CPU number)',
    required: false,
    run(ctx) {
      const rseq = ptraceGetRseqConfiguration(ctx.stubPid);
      return ok(rseq.abiPointer === 0n ? 'answered (the stub has no rseq area)' : 'answered');
    },
  },
  {
    id: 'PR_SET_MM_MAP',
    usedFor: 'restoring the mm layout: code, data, brk, stack, arguments, environment, auxv',
    without: 'restored processes have the stub layout: brk, /proc/PID/cmdline and environ break',
    required: true,
    run(ctx) {
      // Set the stub's layout to what it already is: the kernel validates and applies it.
      const remote = remoteOf(ctx);
      const stat = parseStat(readProcText(ctx.stubPid, 'stat'));
      const brk = remote.call(NR.brk, 0);
      const map = Buffer.alloc(104);
      const fields = [
        stat.startCode,
        stat.endCode,
        stat.startData,
        stat.endData,
        stat.startBrk,
        brk,
        stat.startStack,
        stat.argStart,
        stat.argEnd,
        stat.envStart,
        stat.envEnd,
      ];
      fields.forEach((v, i) => map.writeBigUInt64LE(v, i * 8));
      map.writeUInt32LE(0xffffffff, 100); // exe_fd: unchanged
      const ret = remote.call(NR.prctl, PR.SET_MM, PR_SET_MM.MAP, remote.put(map), map.length, 0);
      return ret === 0n ? ok('applied the stub layout') : no(`prctl failed with ${errnoName(Number(-ret))}`);
    },
  },
  {
    id: 'PTRACE_O_SUSPEND_SECCOMP',
    usedFor: "holding a process under seccomp (filters or strict mode) without them seeing ferry's calls",
    without: 'processes under seccomp cannot be checkpointed',
    required: false,
    run(ctx) {
      ptraceSetOptions(ctx.stubPid, PTRACE_O.TRACESYSGOOD | PTRACE_O.SUSPEND_SECCOMP);
      ptraceSetOptions(ctx.stubPid, PTRACE_O.TRACESYSGOOD);
      return ok('set on the stub');
    },
  },
  {
    id: 'nft',
    usedFor: "holding a --tcp-established process's connections' packets until its restore (nftables)",
    without: 'dump --tcp-established is refused',
    required: false,
    run() {
      checkNft();
      return ok('nft answered');
    },
  },
  capability(
    CAP.SYS_PTRACE,
    'SYS_PTRACE',
    'tracing and reading processes of other users',
    'only processes of the same user, not set-uid, can be checkpointed',
    false,
  ),
  capability(
    CAP.CHECKPOINT_RESTORE,
    'CHECKPOINT_RESTORE',
    'clone3 set_tid, /proc/PID/map_files, setting /proc/PID/exe on restore',
    'PIDs and /proc/PID/exe of restored processes differ',
    false,
  ),
  capability(
    CAP.SYS_ADMIN,
    'SYS_ADMIN',
    'page frame numbers in pagemap (zero-page detection without PAGEMAP_SCAN), and the above',
    'pages mapped to the zero page may be stored when PAGEMAP_SCAN is missing',
    false,
  ),
  capability(
    CAP.SYS_RESOURCE,
    'SYS_RESOURCE',
    'setting rlimits of processes of other users',
    'none: ferry reads limits from /proc/PID/limits and sets them from inside the process',
    false,
  ),
];

/** Probe everything; the stub used for it is always killed and reaped. */
export function check(): CheckReport {
  const capEffective = parseStatus(readFileSync('/proc/self/status', 'latin1')).capEffective;
  const ctx: ProbeContext = { stubPid: spawnStub('ferry-check'), capEffective };
  const features: FeatureReport[] = [];
  try {
    for (const probe of PROBES) {
      let result: ProbeResult;
      try {
        result = probe.run(ctx);
      } catch (err) {
        result = no(describe(err));
      }
      features.push({
        id: probe.id,
        available: result.ok,
        detail: result.detail,
        usedFor: probe.usedFor,
        without: probe.without,
        required: probe.required,
      });
    }
  } finally {
    endStub(ctx);
  }
  const has = (id: string): boolean => features.some((f) => f.id === id && f.available);
  const dirtyTracking: DirtyTracking =
    has('uffd-wp-async') && has('PAGEMAP_SCAN')
      ? 'uffd-wp-async'
      : has('soft-dirty')
        ? 'soft-dirty'
        : 'page-hashes';
  return {
    kernel: release(),
    features,
    dirtyTracking,
    ok: features.every((f) => f.available || !f.required),
  };
}

function endStub(ctx: ProbeContext): void {
  try {
    ctx.remote?.close();
  } finally {
    ctx.tracee?.release();
    kill(ctx.stubPid, SIG.SIGKILL);
    waitpid(ctx.stubPid, 0);
  }
}
