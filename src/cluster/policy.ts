// The balancing policy (docs/BALANCING.md): pure functions over a snapshot of the cluster, hosts and
// their jobs in, migrations out. No clock, no I/O: the balancer, an idle agent asking for work and
// the simulator (bench/balance/sim.ts) all call `decide` with what they know.
//
// A job's remaining CPU time is estimated by what it has had so far (process lifetimes are
// heavy-tailed: a job that has run long is likely to run long yet; Harchol-Balter & Downey). A move
// pays when the time it saves, summed over every job on both hosts under processor sharing, exceeds
// what it costs (the job's downtime, and a share of the copy's time) by a margin.

export interface JobView {
  /** The job's own id (it keeps it when it moves). */
  id: string;
  name: string;
  /** Cores it would use if it had them: its runnable threads, averaged. */
  demand: number;
  /** CPU seconds it has had so far, on every host it ran on. */
  cpuSeconds: number;
  rssBytes: number;
  /** Bytes of memory it writes per second (estimated). */
  dirtyBytesPerSecond: number;
  /** Milliseconds since it last arrived here by a migration; undefined: it never moved. */
  sinceMoveMs?: number;
  /** Started with --no-migrate: never moved. */
  pinned: boolean;
}

export interface HostView {
  /** host:port of its agent. */
  id: string;
  /** Cores its managed jobs may use: the cgroup's quota, else its CPU count. */
  capacity: number;
  /** Demand (cores) on the host that no managed job accounts for. */
  otherDemand: number;
  memAvailableBytes: number;
  /** A migration in or out is under way: no other starts until it ends. */
  busy: boolean;
  /** Drained (`ferry drain`): takes no job. */
  closed?: boolean;
  jobs: JobView[];
}

export interface PolicyParams {
  /** A move must save at least this many seconds in all... */
  minGainSeconds: number;
  /** ...and this many times what it costs. */
  gainCostRatio: number;
  /** The source's load must exceed the target's load after the move by this much (hysteresis). */
  loadMargin: number;
  /** A job that arrived less than this long ago stays (no ping-pong). */
  minStayMs: number;
  /** Memory kept free on a target, beyond the job's size × memoryHeadroom. */
  memoryReserveBytes: number;
  memoryHeadroom: number;
  /** Link bandwidth assumed until migrations have measured one (bytes/s). */
  bandwidthBytesPerSecond: number;
  /** Pre-copy's target downtime, and the time a restore takes besides its pages. */
  maxDowntimeMs: number;
  fixedMs: number;
  /** The share of a migration's total time counted as cost (the copy competes for the hosts' CPU). */
  copyCostShare: number;
  /** Hosts examined on each side per decision: bounds the work at 10,000 hosts. */
  candidates: number;
}

export const DEFAULT_PARAMS: PolicyParams = {
  minGainSeconds: 1,
  gainCostRatio: 2,
  loadMargin: 0.1,
  minStayMs: 10_000,
  memoryReserveBytes: 64 << 20,
  memoryHeadroom: 1.25,
  bandwidthBytesPerSecond: 200e6,
  maxDowntimeMs: 300,
  fixedMs: 50,
  copyCostShare: 0.1,
  candidates: 8,
};

export interface Prediction {
  mode: 'pre-copy' | 'stop-copy';
  bytes: number;
  totalMs: number;
  downtimeMs: number;
}

export interface Decision {
  job: string;
  name: string;
  from: string;
  to: string;
  prediction: Prediction;
  /** Seconds of completion time saved over both hosts' jobs, and what the move costs. */
  gainSeconds: number;
  costSeconds: number;
  /** Normalized loads (demand / capacity) before and after. */
  load: { from: [number, number]; to: [number, number] };
  reason: string;
}

export interface DecideOptions {
  /** Receiver-initiated: only this host (an idle agent asking for work) may take a job. */
  receiver?: string;
  params?: Partial<PolicyParams>;
}

/** Demand per core of capacity (a capacity of 0 counts as almost none, not as a division by 0). */
const perCore = (demand: number, capacity: number): number => demand / Math.max(capacity, 1e-6);

/** Demand over capacity: above 1, every job there runs slower than it could. */
export function hostLoad(host: HostView, extra = 0): number {
  return perCore(demandOf(host) + extra, host.capacity);
}

function demandOf(host: HostView): number {
  return host.otherDemand + host.jobs.reduce((n, j) => n + j.demand, 0);
}

/** How much slower than alone a job runs on a host with `demand` over `capacity` cores. */
const slowdown = (demand: number, capacity: number): number => Math.max(1, perCore(demand, capacity));

/** A job's expected remaining CPU time: what it has had (heavy-tailed lifetimes). */
const remaining = (job: JobView): number => job.cpuSeconds / Math.max(job.demand, 0.05);

/** Predict a migration of `rssBytes` written at `dirty` bytes/s over a link of `bandwidth` bytes/s. */
export function predictMigration(
  rssBytes: number,
  dirty: number,
  params: PolicyParams,
  bandwidth = params.bandwidthBytesPerSecond,
): Prediction {
  const fixed = params.fixedMs;
  if (dirty >= bandwidth / 2) {
    const ms = (rssBytes / bandwidth) * 1000 + fixed;
    return { mode: 'stop-copy', bytes: rssBytes, totalMs: ms, downtimeMs: ms };
  }
  // Rounds: all of it, then what was written meanwhile, until a round fits the downtime.
  let round = rssBytes;
  let bytes = rssBytes;
  for (let i = 0; i < 8 && (round / bandwidth) * 1000 > params.maxDowntimeMs; i++) {
    round = Math.min(rssBytes, dirty * (round / bandwidth));
    bytes += round;
  }
  return {
    mode: 'pre-copy',
    bytes,
    totalMs: (bytes / bandwidth) * 1000 + fixed,
    downtimeMs: (round / bandwidth) * 1000 + fixed,
  };
}

interface Candidate {
  job: JobView;
  from: HostView;
  to: HostView;
  gain: number;
  cost: number;
  prediction: Prediction;
}

/** What a host's jobs add up to: demand, and expected remaining time (computed once per look). */
interface Sums {
  demand: number;
  remaining: number;
}

const sumsOf = (h: HostView): Sums => ({
  demand: demandOf(h),
  remaining: h.jobs.reduce((n, j) => n + remaining(j), 0),
});

/** The seconds saved by moving `job` from `from` to `to`, over every job on both (processor sharing). */
export function moveGain(
  job: JobView,
  from: HostView,
  to: HostView,
  f = sumsOf(from),
  t = sumsOf(to),
): number {
  const fromBefore = slowdown(f.demand, from.capacity);
  const fromAfter = slowdown(f.demand - job.demand, from.capacity);
  const toBefore = slowdown(t.demand, to.capacity);
  const toAfter = slowdown(t.demand + job.demand, to.capacity);
  const own = remaining(job);
  return (
    own * (fromBefore - toAfter) + // the job itself
    (f.remaining - own) * (fromBefore - fromAfter) - // the jobs it leaves, which speed up
    t.remaining * (toAfter - toBefore) // the jobs it joins, which slow down
  );
}

function evaluate(
  job: JobView,
  from: HostView,
  to: HostView,
  p: PolicyParams,
  bandwidth: number,
  sums: (h: HostView) => Sums,
): Candidate | undefined {
  if (job.pinned || (job.sinceMoveMs !== undefined && job.sinceMoveMs < p.minStayMs)) return undefined;
  if (to.memAvailableBytes < job.rssBytes * p.memoryHeadroom + p.memoryReserveBytes) return undefined;
  const [f, t] = [sums(from), sums(to)];
  if (perCore(f.demand, from.capacity) - perCore(t.demand + job.demand, to.capacity) < p.loadMargin)
    return undefined;
  const prediction = predictMigration(job.rssBytes, job.dirtyBytesPerSecond, p, bandwidth);
  const cost = (prediction.downtimeMs + p.copyCostShare * prediction.totalMs) / 1000;
  const gain = moveGain(job, from, to, f, t);
  if (gain < p.minGainSeconds || gain < p.gainCostRatio * cost) return undefined;
  return { job, from, to, gain, cost, prediction };
}

/**
 * The migrations to start now: at most one per host (in or out), each the best move left between
 * the most and the least loaded hosts that are free. `bandwidth`: bytes/s measured so far.
 */
export function decide(
  hosts: readonly HostView[],
  options: DecideOptions = {},
  bandwidth?: number,
): Decision[] {
  const p = { ...DEFAULT_PARAMS, ...options.params };
  const bw = bandwidth ?? p.bandwidthBytesPerSecond;
  const free = new Set(hosts.filter((h) => !h.busy));
  const memo = new Map<HostView, Sums>();
  const sums = (h: HostView): Sums => {
    let v = memo.get(h);
    if (!v) memo.set(h, (v = sumsOf(h)));
    return v;
  };
  const loads = new Map(hosts.map((h) => [h, perCore(sums(h).demand, h.capacity)]));
  const byLoad = [...free].sort((a, b) => loads.get(b)! - loads.get(a)!);
  const sources = byLoad.filter((h) => loads.get(h)! > 1 && h.id !== options.receiver);
  const targets = byLoad
    .filter((h) => !h.closed && (options.receiver === undefined || h.id === options.receiver))
    .reverse();
  // The first candidates of each list still free: a host leaves `free` once in a move, and the
  // lists are scanned from the first still free on (at 10,000 hosts, not from the top each time).
  const starts = new Map<HostView[], number>();
  const window = (list: HostView[]): HostView[] => {
    let at = starts.get(list) ?? 0;
    while (at < list.length && !free.has(list[at]!)) at++;
    starts.set(list, at);
    const out: HostView[] = [];
    for (let i = at; i < list.length && out.length < p.candidates; i++)
      if (free.has(list[i]!)) out.push(list[i]!);
    return out;
  };
  const decisions: Decision[] = [];
  for (;;) {
    let best: Candidate | undefined;
    const to = window(targets);
    for (const from of window(sources))
      for (const target of to) {
        if (target === from) continue;
        for (const job of from.jobs) {
          const c = evaluate(job, from, target, p, bw, sums);
          if (c && (!best || c.gain - c.cost > best.gain - best.cost)) best = c;
        }
      }
    if (!best) return decisions;
    decisions.push(describeMove(best));
    free.delete(best.from);
    free.delete(best.to);
  }
}

function describeMove(c: Candidate): Decision {
  const load = {
    from: [hostLoad(c.from), hostLoad(c.from, -c.job.demand)] as [number, number],
    to: [hostLoad(c.to), hostLoad(c.to, c.job.demand)] as [number, number],
  };
  const f = (n: number): string => n.toFixed(2);
  return {
    job: c.job.id,
    name: c.job.name,
    from: c.from.id,
    to: c.to.id,
    prediction: c.prediction,
    gainSeconds: c.gain,
    costSeconds: c.cost,
    load,
    reason:
      `load ${f(load.from[0])} on ${c.from.id} against ${f(load.to[0])} on ${c.to.id}: ` +
      `${c.job.name} (${c.job.cpuSeconds.toFixed(1)} CPU-s so far, ${(c.job.rssBytes / 2 ** 20).toFixed(1)} MiB) ` +
      `saves ${c.gain.toFixed(1)} s for ${c.cost.toFixed(2)} s (${c.prediction.mode}, ~${Math.round(c.prediction.downtimeMs)} ms down)`,
  };
}

/** Named policies (`ferry balancer --policy NAME`): the defaults, and two leanings. */
export const POLICIES: Record<string, Partial<PolicyParams>> = {
  default: {},
  /** Moves sooner and more often: short jobs, a fast network. */
  eager: { minGainSeconds: 0.5, gainCostRatio: 1.5, minStayMs: 5_000 },
  /** Moves only what clearly pays: long jobs, a slow or shared network. */
  cautious: { minGainSeconds: 10, gainCostRatio: 4, loadMargin: 0.5, minStayMs: 60_000 },
};

/**
 * Placement at birth (`ferry run --agent a,b,c`), and a drained host's jobs: the open host where one more job makes the least
 * load, among those with room for `rssBytes`; undefined when none has.
 */
export function placeJob(
  hosts: readonly HostView[],
  rssBytes = 0,
  params: Partial<PolicyParams> = {},
): HostView | undefined {
  const p = { ...DEFAULT_PARAMS, ...params };
  let best: HostView | undefined;
  for (const h of hosts) {
    if (h.closed || h.memAvailableBytes < rssBytes * p.memoryHeadroom + p.memoryReserveBytes) continue;
    if (!best || hostLoad(h, 1) < hostLoad(best, 1)) best = h;
  }
  return best;
}
