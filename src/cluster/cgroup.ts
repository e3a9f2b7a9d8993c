// The cgroup an agent keeps its jobs in (`ferry agent --cgroup PATH [--cpus N]`): the CPU quota is
// the host's capacity for balancing. cgroup v2 (cpu.max), what production hosts have, or v1
// (cpu.cfs_quota_us) where the cpu controller is still there; and where a v2 hierarchy exists
// without the controller (hybrid hosts), the same path in it too, for its CPU pressure (PSI).
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, isAbsolute, join, relative } from 'node:path';
import { FerryError } from '../errors.js';
import { kill, SIG } from '../sys/signal.js';

export interface CgroupMounts {
  /** The v2 hierarchy's mount, and whether the cpu controller is in it. */
  v2?: { root: string; cpu: boolean };
  /** A v1 hierarchy with the cpu controller. */
  v1Cpu?: string;
}

/** Where the cgroup hierarchies are mounted (/proc/self/mounts). */
export function findCgroupMounts(mounts = readFileSync('/proc/self/mounts', 'latin1')): CgroupMounts {
  const found: CgroupMounts = {};
  for (const line of mounts.split('\n')) {
    const [, dir, type, opts] = line.split(' ');
    if (type === 'cgroup2' && !found.v2) {
      const controllers = readOr(join(dir!, 'cgroup.controllers'), '').split(/\s+/);
      found.v2 = { root: dir!, cpu: controllers.includes('cpu') };
    } else if (type === 'cgroup' && (opts ?? '').split(',').includes('cpu') && !found.v1Cpu)
      found.v1Cpu = dir!;
  }
  return found;
}

function readOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return fallback;
  }
}

export interface CpuCgroup {
  /** The path given, relative to the hierarchy. */
  path: string;
  version: 1 | 2;
  /** Its directory in the hierarchy that has the cpu controller. */
  dir: string;
  /** Its directory in a v2 hierarchy, where CPU pressure is read (the same as `dir` on v2). */
  psiDir: string | undefined;
  /** Cores its quota allows; undefined: no quota. */
  quota(): number | undefined;
  /** Move process `pid` (all its threads) into it. */
  add(pid: number): void;
  /** CPU pressure: the share of the last 10 s some runnable task waited (0-100), if known. */
  pressure(): number | undefined;
  /** Remove what this agent made, if no process is left in it. */
  close(): void;
}

const PERIOD_US = 100_000;

/** Open (making it if missing) the cgroup `path`, and set its quota to `cores` if given. */
export function openCgroup(path: string, cores?: number, mounts = findCgroupMounts()): CpuCgroup {
  const v2cpu = mounts.v2?.cpu ? mounts.v2.root : undefined;
  const root = v2cpu ?? mounts.v1Cpu;
  if (!root)
    throw new FerryError('FERRY_USAGE', 'no cgroup hierarchy with the cpu controller is mounted here');
  const rel = isAbsolute(path) ? relative(root, path) : path;
  if (rel.startsWith('..') || isAbsolute(rel) || rel === '')
    throw new FerryError('FERRY_USAGE', `--cgroup ${path} is not a cgroup below ${root}`);
  const made: string[] = [];
  const make = (dir: string): void => {
    if (existsSync(dir)) return;
    make(dirname(dir));
    try {
      mkdirSync(dir);
    } catch (err) {
      throw new FerryError('FERRY_USAGE', `cannot make the cgroup ${dir}: ${(err as Error).message}`);
    }
    made.unshift(dir);
  };
  const dir = join(root, rel);
  make(dir);
  if (v2cpu) enableCpu(v2cpu, rel);
  const psiRoot = mounts.v2?.root;
  const psiDir = psiRoot && psiRoot !== root ? join(psiRoot, rel) : psiRoot ? dir : undefined;
  if (psiDir && psiDir !== dir) make(psiDir);
  const version = v2cpu ? 2 : 1;
  const write = (file: string, value: string): void => {
    try {
      writeFileSync(join(dir, file), value);
    } catch (err) {
      throw new FerryError(
        'FERRY_USAGE',
        `cannot write ${value.trim()} to ${join(dir, file)}: ${(err as Error).message}`,
      );
    }
  };
  if (cores !== undefined) {
    const quota = String(Math.round(cores * PERIOD_US));
    if (version === 2) write('cpu.max', `${quota} ${PERIOD_US}`);
    else {
      write('cpu.cfs_period_us', String(PERIOD_US));
      write('cpu.cfs_quota_us', quota);
    }
  }
  return {
    path: rel,
    version,
    dir,
    psiDir,
    quota: () => {
      if (version === 2) {
        const [max, period] = readOr(join(dir, 'cpu.max'), 'max').trim().split(' ');
        return max === 'max' ? undefined : Number(max) / Number(period);
      }
      const quota = Number(readOr(join(dir, 'cpu.cfs_quota_us'), '-1'));
      return quota <= 0
        ? undefined
        : quota / Number(readOr(join(dir, 'cpu.cfs_period_us'), String(PERIOD_US)));
    },
    add: (pid) => {
      for (const d of psiDir && psiDir !== dir ? [dir, psiDir] : [dir]) {
        try {
          writeFileSync(join(d, 'cgroup.procs'), String(pid));
        } catch (err) {
          // A process that has just ended cannot be moved; any other failure is the operator's to know.
          if ((err as NodeJS.ErrnoException).code !== 'ESRCH')
            throw new FerryError('FERRY_INTERNAL', `cannot move ${pid} into ${d}: ${(err as Error).message}`);
        }
      }
    },
    pressure: () => {
      if (!psiDir) return undefined;
      const m = /^some avg10=([\d.]+)/m.exec(readOr(join(psiDir, 'cpu.pressure'), ''));
      return m ? Number(m[1]) : undefined;
    },
    close: () => {
      for (const d of made)
        try {
          rmdirSync(d);
        } catch {
          // still holds processes (jobs outlive the agent): left for the next agent
        }
    },
  };
}

/** Turn the cpu controller on in every cgroup from the v2 root down to `rel`'s parent. */
function enableCpu(root: string, rel: string): void {
  let dir = root;
  for (const part of rel.split('/').filter(Boolean)) {
    const control = join(dir, 'cgroup.subtree_control');
    if (!readOr(control, '').split(/\s+/).includes('cpu')) {
      try {
        writeFileSync(control, '+cpu');
      } catch (err) {
        throw new FerryError(
          'FERRY_USAGE',
          `cannot enable the cpu controller in ${dir}: ${(err as Error).message}`,
        );
      }
    }
    dir = join(dir, part);
  }
}

/** The cores a host's jobs may use: the cgroup's quota, else every CPU. */
export function capacityOf(cgroup: CpuCgroup | undefined): number {
  return cgroup?.quota() ?? cpus().length;
}

/**
 * Remove cgroup `rel` (relative to the cpu hierarchy, and its v2 twin where there is one) after
 * killing what is still in it: for a cgroup whose every process is the caller's to end (the local
 * cluster's hosts, once their agents are stopped). Gives up on one that does not empty in 5 s.
 */
export async function removeCgroup(rel: string, mounts = findCgroupMounts()): Promise<void> {
  for (const root of [mounts.v1Cpu, mounts.v2?.root]) {
    const dir = root && join(root, rel);
    if (!dir || !existsSync(dir)) continue;
    for (const until = Date.now() + 5_000; ; await new Promise((r) => setTimeout(r, 50))) {
      const procs = readFileSync(join(dir, 'cgroup.procs'), 'latin1').split('\n').filter(Boolean).map(Number);
      for (const pid of procs)
        try {
          kill(pid, SIG.SIGKILL);
        } catch {
          // gone already
        }
      try {
        rmdirSync(dir);
        break;
      } catch {
        if (Date.now() > until) break; // left as it is: a process there would not die
      }
    }
  }
}
