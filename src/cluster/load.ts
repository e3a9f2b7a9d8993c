// What an agent measures for balancing (GET /v1/load): per managed job its CPU rate, its demand
// (threads runnable, which counts time spent throttled by a quota or waiting for a CPU), RSS and CPU
// time; for the host its capacity, demand, CPU pressure and memory. Sampled on a timer and smoothed,
// so that one look does not decide a migration.
import { parseStat } from '../proc/stat.js';
import { listProcDir, readProcText } from '../proc/files.js';
import { childrenOf } from '../state/tree.js';

/** Clock ticks per second of /proc's CPU times (sysconf(_SC_CLK_TCK) is 100 on Linux). */
const CLK_TCK = 100;
const PAGE = 4096;
/** Weight of the newest sample in the smoothed figures. */
const SMOOTHING = 0.3;

export interface JobLoad {
  /** CPU seconds its processes have had here. */
  cpuSeconds: number;
  /** Cores it used over the last samples. */
  cpuRate: number;
  /** Threads runnable (running or waiting for a CPU), averaged: the cores it would use. */
  demand: number;
  rssBytes: number;
  processes: number;
}

interface Tracked extends JobLoad {
  /** CPU ticks at the last sample, and when it was (ms). */
  ticks: number;
  at: number;
}

/** The PIDs of `pid` and its descendants, parents first. */
export function processTree(pid: number): number[] {
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) {
    try {
      tree.push(...childrenOf(tree[i]!));
    } catch {
      // it ended meanwhile
    }
  }
  return tree;
}

function readTree(pid: number): { ticks: number; runnable: number; rssPages: number; processes: number } {
  let ticks = 0;
  let runnable = 0;
  let rssPages = 0;
  let processes = 0;
  for (const p of processTree(pid)) {
    try {
      const stat = parseStat(readProcText(p, 'stat'));
      ticks += stat.utime + stat.stime;
      rssPages += Number(stat.rssPages);
      processes++;
      for (const tid of listProcDir(p, 'task'))
        if (parseStat(readProcText(p, `task/${tid}/stat`)).state === 'R') runnable++;
    } catch {
      // ended between the listing and the read
    }
  }
  return { ticks, runnable, rssPages, processes };
}

export class LoadMonitor {
  private readonly jobs = new Map<number, Tracked>();

  /** Sample the jobs whose root PIDs are `pids` (any other is forgotten). */
  sample(pids: readonly number[], now = Date.now()): void {
    for (const pid of this.jobs.keys()) if (!pids.includes(pid)) this.jobs.delete(pid);
    for (const pid of pids) {
      const t = readTree(pid);
      if (t.processes === 0) {
        this.jobs.delete(pid);
        continue;
      }
      const last = this.jobs.get(pid);
      const cpuSeconds = t.ticks / CLK_TCK;
      if (!last) {
        this.jobs.set(pid, {
          cpuSeconds,
          cpuRate: 0,
          demand: t.runnable,
          rssBytes: t.rssPages * PAGE,
          processes: t.processes,
          ticks: t.ticks,
          at: now,
        });
        continue;
      }
      const rate = now > last.at ? (t.ticks - last.ticks) / CLK_TCK / ((now - last.at) / 1000) : last.cpuRate;
      last.cpuRate += SMOOTHING * (Math.max(0, rate) - last.cpuRate);
      last.demand += SMOOTHING * (t.runnable - last.demand);
      last.cpuSeconds = cpuSeconds;
      last.rssBytes = t.rssPages * PAGE;
      last.processes = t.processes;
      last.ticks = t.ticks;
      last.at = now;
    }
  }

  job(pid: number): JobLoad | undefined {
    const j = this.jobs.get(pid);
    return (
      j && {
        cpuSeconds: j.cpuSeconds,
        cpuRate: j.cpuRate,
        demand: j.demand,
        rssBytes: j.rssBytes,
        processes: j.processes,
      }
    );
  }
}
