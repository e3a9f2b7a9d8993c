// A processor-sharing cluster simulator that drives the balancing policy (src/cluster/policy.ts)
// over a trace of jobs: what the policy would do at 10 to 10,000 hosts, without running any.
// Each host shares its capacity equally among its runnable jobs; a migration keeps its job running
// on the source for the predicted pre-copy time, stops it for the predicted downtime, then moves it.
import { decide, DEFAULT_PARAMS, type HostView, type PolicyParams } from '../../src/cluster/policy.js';

export interface TraceJob {
  /** Seconds from the start at which it is submitted, and on which host (index). */
  arrival: number;
  host: number;
  cpuSeconds: number;
  rssBytes: number;
  dirtyBytesPerSecond: number;
}

export type Strategy = 'none' | 'placement' | 'balance' | 'placement+balance';

export interface SimOptions {
  hosts: number;
  /** Simulated seconds per step, and between two of the balancer's looks at the cluster. */
  stepSeconds: number;
  intervalSeconds: number;
  bandwidthBytesPerSecond: number;
  params?: Partial<PolicyParams>;
}

export interface SimResult {
  strategy: Strategy;
  makespan: number;
  meanSlowdown: number;
  migrations: number;
  bytesMoved: number;
  /** Wall milliseconds the simulation took. */
  wallMs: number;
}

interface Job {
  id: number;
  trace: TraceJob;
  done: number;
  /** Seconds without progress left (a migration's downtime). */
  frozen: number;
  movedAt?: number;
  finished?: number;
}

interface Host {
  jobs: Job[];
  busyUntil: number;
}

interface Move {
  job: Job;
  from: number;
  to: number;
  /** When it stops running on the source, and when it runs on the target. */
  freezeAt: number;
  arriveAt: number;
  bytes: number;
}

/** The ideal bound: total work over capacity, or the longest job, whichever is longer. */
export function idealBound(trace: readonly TraceJob[], hosts: number): number {
  let work = 0;
  let latest = 0;
  let first = Infinity;
  for (const j of trace) {
    work += j.cpuSeconds;
    latest = Math.max(latest, j.arrival + j.cpuSeconds);
    first = Math.min(first, j.arrival);
  }
  return Math.max(first + work / hosts, latest);
}

export function simulate(trace: readonly TraceJob[], strategy: Strategy, o: SimOptions): SimResult {
  const started = performance.now();
  const params: PolicyParams = {
    ...DEFAULT_PARAMS,
    ...o.params,
    bandwidthBytesPerSecond: o.bandwidthBytesPerSecond,
  };
  const hosts: Host[] = Array.from({ length: o.hosts }, () => ({ jobs: [], busyUntil: 0 }));
  const order = [...trace].sort((a, b) => a.arrival - b.arrival);
  const jobs: Job[] = order.map((t, id) => ({ id, trace: t, done: 0, frozen: 0 }));
  const places = strategy === 'placement' || strategy === 'placement+balance';
  const balances = strategy === 'balance' || strategy === 'placement+balance';
  /**
   * Placement is done where jobs are submitted, as MOSIX and Condor's schedds do: each submitting
   * host knows the loads of the last report (each interval) and what it placed itself since, not
   * what the other submitters placed meanwhile.
   */
  let reported = hosts.map(() => 0);
  /** Host indexes by reported load, lowest first (sorted at each report). */
  let byReported = hosts.map((_, i) => i);
  const placedSince = new Map<number, Map<number, number>>();
  const moves: Move[] = [];
  let next = 0;
  let finished = 0;
  let migrations = 0;
  let bytesMoved = 0;
  let nextLook = 0;
  let t = 0;
  const dt = o.stepSeconds;
  while (finished < jobs.length) {
    for (let i = moves.length - 1; i >= 0; i--) {
      const m = moves[i]!;
      if (m.job.finished !== undefined) moves.splice(i, 1);
      else if (t >= m.arriveAt) {
        const src = hosts[m.from]!.jobs;
        src.splice(src.indexOf(m.job), 1);
        hosts[m.to]!.jobs.push(m.job);
        m.job.movedAt = t;
        moves.splice(i, 1);
      } else if (t >= m.freezeAt) m.job.frozen = dt;
    }
    if (t >= nextLook) {
      reported = hosts.map((h) => h.jobs.length);
      byReported = hosts.map((_, i) => i).sort((a, b) => reported[a]! - reported[b]!);
      placedSince.clear();
      if (balances) {
        for (const d of decide(view(hosts, t), { params }, o.bandwidthBytesPerSecond)) {
          const from = Number(d.from);
          const to = Number(d.to);
          const job = hosts[from]!.jobs.find((j) => String(j.id) === d.job)!;
          const p = d.prediction;
          const arriveAt = t + p.totalMs / 1000;
          moves.push({ job, from, to, freezeAt: arriveAt - p.downtimeMs / 1000, arriveAt, bytes: p.bytes });
          hosts[from]!.busyUntil = hosts[to]!.busyUntil = arriveAt;
          migrations++;
          bytesMoved += p.bytes;
        }
      }
      nextLook = t + o.intervalSeconds;
    }
    while (next < jobs.length && jobs[next]!.trace.arrival <= t) {
      const job = jobs[next++]!;
      let host = job.trace.host;
      if (places) host = place(job.trace.host);
      hosts[host]!.jobs.push(job);
    }
    for (const h of hosts) {
      if (h.jobs.length === 0) continue;
      const share = Math.min(1, 1 / h.jobs.length);
      for (let i = h.jobs.length - 1; i >= 0; i--) {
        const job = h.jobs[i]!;
        if (job.frozen > 0) {
          job.frozen = 0;
          continue;
        }
        job.done += share * dt;
        if (job.done >= job.trace.cpuSeconds) {
          job.finished = t + dt;
          finished++;
          h.jobs.splice(i, 1);
        }
      }
    }
    t += dt;
    if (next < jobs.length && next === finished && jobs[next]!.trace.arrival > t)
      t = Math.ceil(jobs[next]!.trace.arrival / dt) * dt; // nothing runs: skip to the next arrival
  }
  let slowdown = 0;
  let makespan = 0;
  for (const j of jobs) {
    slowdown += (j.finished! - j.trace.arrival) / j.trace.cpuSeconds;
    makespan = Math.max(makespan, j.finished!);
  }
  return {
    strategy,
    makespan,
    meanSlowdown: slowdown / jobs.length,
    migrations,
    bytesMoved,
    wallMs: performance.now() - started,
  };

  function place(submitter: number): number {
    let mine = placedSince.get(submitter);
    if (!mine) placedSince.set(submitter, (mine = new Map<number, number>()));
    // The least of reported + own placements: scanned by reported load, up to where the reported
    // load alone is no lower than the best found (own placements only add).
    let best = 0;
    let bestLoad = Infinity;
    for (const i of byReported) {
      if (reported[i]! >= bestLoad) break;
      const load = reported[i]! + (mine.get(i) ?? 0);
      if (load < bestLoad) [best, bestLoad] = [i, load];
    }
    mine.set(best, (mine.get(best) ?? 0) + 1);
    return best;
  }

  function view(all: Host[], now: number): HostView[] {
    return all.map((h, i) => ({
      id: String(i),
      capacity: 1,
      otherDemand: 0,
      memAvailableBytes: 64e9,
      busy: h.busyUntil > now,
      jobs: h.jobs.map((j) => ({
        id: String(j.id),
        name: `job-${j.id}`,
        demand: 1,
        cpuSeconds: j.done,
        rssBytes: j.trace.rssBytes,
        dirtyBytesPerSecond: j.trace.dirtyBytesPerSecond,
        sinceMoveMs: j.movedAt === undefined ? undefined : (now - j.movedAt) * 1000,
        pinned: false,
      })),
    }));
  }
}

/** A deterministic generator (mulberry32), so that every strategy sees the same trace. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

export interface TraceOptions {
  hosts: number;
  /** Offered load: work submitted per second over the cluster's capacity. */
  load: number;
  /** Seconds over which jobs are submitted. */
  spanSeconds: number;
  /** Pareto shape of CPU time (heavier tail as it nears 1), its minimum and its cap (seconds). */
  alpha: number;
  minSeconds: number;
  maxSeconds: number;
  /** Jobs per submission (a job array, a make -j): mean of a geometric distribution. */
  burst: number;
  /** The share of hosts that users submit to. */
  submitShare: number;
  seed: number;
}

/** Heavy-tailed CPU times submitted in bursts to a few hosts: what users at their workstations do. */
export function syntheticTrace(o: TraceOptions): TraceJob[] {
  const rand = random(o.seed);
  const pareto = (): number => Math.min(o.maxSeconds, o.minSeconds / Math.pow(1 - rand(), 1 / o.alpha));
  const meanSize =
    o.alpha === 1
      ? o.minSeconds * (1 + Math.log(o.maxSeconds / o.minSeconds))
      : (o.alpha * o.minSeconds - o.minSeconds ** o.alpha * o.maxSeconds ** (1 - o.alpha)) / (o.alpha - 1);
  const rate = (o.load * o.hosts) / meanSize / o.burst; // submissions per second
  const submitters = Math.max(1, Math.round(o.hosts * o.submitShare));
  const trace: TraceJob[] = [];
  for (let t = -Math.log(1 - rand()) / rate; t < o.spanSeconds; t += -Math.log(1 - rand()) / rate) {
    const host = Math.floor(rand() * submitters);
    const n = 1 + Math.floor(Math.log(1 - rand()) / Math.log(1 - 1 / o.burst));
    for (let k = 0; k < n; k++) {
      const rss = 2 ** (22 + rand() * 8); // 4 MiB to 1 GiB, log-uniform
      trace.push({
        arrival: t,
        host,
        cpuSeconds: pareto(),
        rssBytes: rss,
        dirtyBytesPerSecond: rss * 0.05 * rand(),
      });
    }
  }
  return trace;
}
