// A cluster on one machine, for `ferry demo cluster` and `npm run bench:balance`: agents on loopback
// ports, each confining its jobs to a CPU quota of its own cgroup, and a batch of CPU-bound jobs
// that check their own results, run with the balancer or without it.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FerryError } from '../errors.js';
import { ferryCommand } from '../launcher.js';
import { callAgent } from '../migrate/client.js';
import type { HistoryEntry } from '../agent/jobs.js';
import {
  endpointOf,
  gatherLoads,
  startBalancer,
  type BalancerOptions,
  type DecisionEvent,
} from './balancer.js';
import { findCgroupMounts, removeCgroup } from './cgroup.js';
import type { PolicyParams } from './policy.js';
import type { ClusterStore } from './etcd.js';

export interface LocalCluster {
  peers: string[];
  token: string;
  /** The agents are members of this etcd cluster (and the balancer finds them there). */
  etcd?: ClusterStore;
  stop(): Promise<void>;
}

const START_TIMEOUT_MS = 15_000;

/** Start `hosts` agents on loopback, each with a cgroup quota of `cpus` cores, working in `dir`. */
export async function startLocalCluster(o: {
  hosts: number;
  cpus: number;
  dir: string;
  /** Client URLs of an etcd cluster for the agents to join. */
  etcd?: string[];
}): Promise<LocalCluster> {
  const mounts = findCgroupMounts();
  if (!mounts.v1Cpu && !mounts.v2?.cpu)
    throw new FerryError(
      'FERRY_UNSUPPORTED',
      'no cgroup hierarchy with the cpu controller here: the hosts need CPU quotas',
    );
  if (process.getuid?.() !== 0)
    throw new FerryError('FERRY_PERMISSION', 'a local cluster needs root (cgroups, ptrace)');
  const token = randomBytes(24).toString('hex');
  const tokenFile = join(o.dir, 'token');
  mkdirSync(o.dir, { recursive: true });
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const agents: ChildProcess[] = [];
  // Loaded only when asked for: etcd's client (gRPC) is large.
  const store = o.etcd && new (await import('./etcd.js')).ClusterStore(o.etcd);
  const cgroup = (i: number): string => `ferry-local-${process.pid}-${i}`;
  const stop = async (): Promise<void> => {
    await Promise.all(agents.map(stopAgent));
    store?.close();
    // What the agents leave in their cgroups (a job whose move was cut short, a held process that
    // dies after its agent) is this cluster's own: it goes, and so do the cgroups.
    await Promise.all(agents.map((_, i) => removeCgroup(cgroup(i), mounts)));
  };
  try {
    const peers: string[] = [];
    for (let i = 0; i < o.hosts; i++) {
      const child = spawn(
        ferryCommand(),
        [
          ...[
            'agent',
            '--listen',
            '127.0.0.1:0',
            '--data-dir',
            join(o.dir, `host-${i}`),
            '--token-file',
            tokenFile,
          ],
          ...['--cgroup', cgroup(i), '--cpus', String(o.cpus), '--json'],
          ...(o.etcd ? ['--etcd', o.etcd.join(',')] : []),
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      agents.push(child);
      peers.push(await listening(child));
    }
    return { peers, token, ...(store ? { etcd: store } : {}), stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The address an agent says it listens on (its --json answer). */
function listening(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(
      () => reject(new FerryError('FERRY_INTERNAL', `an agent did not start: ${err}`)),
      START_TIMEOUT_MS,
    );
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      try {
        const { listening: address } = JSON.parse(out) as { listening: string };
        clearTimeout(timer);
        resolve(address);
      } catch {
        // not all of it yet
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new FerryError('FERRY_INTERNAL', `an agent exited (${code}): ${err.trim()}`));
    });
  });
}

function stopAgent(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/**
 * The job: `n` rounds of arithmetic whose sum has a closed form, which it checks at the end
 * ("ok <name> <sum> cpu=<seconds>", exit 0), with 8 MiB of memory it checks too, so that a move has
 * some to carry. Counted in chunks by a function that sees small integers only: V8 keeps one
 * speed at any `n` (a loop counter past 2^31 deoptimizes it for good).
 */
const JOB = `
const n = Number(process.argv[1]), name = process.argv[2], CHUNK = 1048576;
const heap = new Float64Array(1 << 20).map((_, i) => i);
function chunk(len, r) {
  let t = 0;
  for (let k = 0; k < len; k++) { t += (r * r) % 7; r = r === 6 ? 0 : r + 1; }
  return t;
}
let s = 0, chunks = 0, r = 0;
for (let left = n; left > 0; left -= CHUNK) {
  const len = Math.min(CHUNK, left);
  s += chunk(len, r);
  r = (r + len) % 7;
  heap[chunks++ % heap.length] += 1;
}
const P = [0, 1, 4, 2, 2, 4, 1];
const want = Math.floor(n / 7) * 14 + P.slice(0, n % 7).reduce((a, b) => a + b, 0);
let extra = 0;
for (let i = 0; i < heap.length; i++) extra += heap[i] - i;
const ok = s === want && extra === chunks;
const u = process.cpuUsage();
console.log((ok ? 'ok ' : 'WRONG ') + name + ' ' + s + ' cpu=' + ((u.user + u.system) / 1e6).toFixed(3));
process.exitCode = ok ? 0 : 1;
`;

/**
 * The job's rounds per CPU second on this machine, from the CPU time two runs report (all their
 * threads: V8 compiles and collects garbage beside the loop, and a quota counts that too).
 */
export async function calibrateJob(): Promise<number> {
  const cpu = (n: number): Promise<number> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['-e', JOB, String(n), 'calibration'], {
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.once('exit', (code) => {
        const seconds = Number(/ cpu=([\d.]+)/.exec(out)?.[1]);
        if (code === 0 && seconds > 0) resolve(seconds);
        else reject(new FerryError('FERRY_INTERNAL', `the calibration job failed (${code}): ${out}`));
      });
    });
  // Long enough that V8's warm-up is in both and cancels out (about 0.3 and 1.5 CPU-seconds).
  const small = 1e8;
  const large = 6e8;
  const [a, b] = [await cpu(small), await cpu(large)];
  return (large - small) / Math.max(b - a, 1e-3);
}

export interface BatchJob {
  name: string;
  cpuSeconds: number;
}

export interface BatchOptions {
  jobs: BatchJob[];
  /** The host every job starts on (index into the peers). */
  host: number;
  balance: boolean;
  cpus: number;
  iterationsPerSecond: number;
  dir: string;
  intervalMs?: number;
  params?: Partial<PolicyParams>;
  /** Stop waiting after this long (default: four times the unbalanced estimate). */
  timeoutMs?: number;
  onEvent?: (event: DecisionEvent) => void;
  /** Hears the balancer's every look at the cluster (a dashboard's feed). */
  onLook?: BalancerOptions['onLook'];
  /** Aborted: the batch stops at once, its jobs killed (a Ctrl-C of `ferry demo cluster`). */
  signal?: AbortSignal;
  /** Every second or so: which job is on which host, and which are done. */
  onProgress?: (progress: { elapsedMs: number; perHost: number[]; done: number }) => void;
}

export interface BatchJobResult extends BatchJob {
  /** Milliseconds from the start of the batch to its result. */
  finishedMs: number;
  ok: boolean;
  output: string;
  /** The hosts it ran on, first to last. */
  hosts: string[];
}

export interface BatchResult {
  jobs: BatchJobResult[];
  makespanMs: number;
  /** Each job's time over its time alone on a host (cpuSeconds / min(1, cpus)), averaged. */
  meanSlowdown: number;
  /** Total work over total capacity, or the longest job alone, whichever is longer. */
  idealMs: number;
  migrations: HistoryEntry[];
  balanced: boolean;
}

/** Run a batch on a local cluster: every job started on one host, then waited for. */
export async function runBatch(cluster: LocalCluster, o: BatchOptions): Promise<BatchResult> {
  const started = Date.now();
  const alone = (j: BatchJob): number => (j.cpuSeconds / Math.min(1, o.cpus)) * 1000;
  const totalCpu = o.jobs.reduce((n, j) => n + j.cpuSeconds, 0);
  const idealMs = Math.max((totalCpu / (cluster.peers.length * o.cpus)) * 1000, ...o.jobs.map(alone));
  const timeoutMs = o.timeoutMs ?? Math.max(60_000, (totalCpu / o.cpus) * 4000);
  const origin = cluster.peers[o.host]!;
  const where = new Map<string, string[]>();
  const ids = new Map<string, string>();
  const outputs = new Map<string, string>();
  mkdirSync(o.dir, { recursive: true });
  for (const job of o.jobs) {
    const out = join(o.dir, `${job.name}.out`);
    outputs.set(job.name, out);
    const n = Math.round(job.cpuSeconds * o.iterationsPerSecond);
    const answer = await callAgent<{ id: string }>(
      endpointOf(origin, cluster.token),
      'POST',
      '/v1/jobs',
      {
        argv: [process.execPath, '-e', JOB, String(n), job.name],
        cwd: o.dir,
        env: [`PATH=${process.env.PATH ?? '/usr/bin:/bin'}`, 'UV_USE_IO_URING=0'],
        name: job.name,
        stdout: out,
        stderr: out,
      },
      30_000,
    );
    ids.set(answer.id, job.name);
    where.set(job.name, [origin]);
  }
  const balancer =
    o.balance &&
    startBalancer({
      ...(cluster.etcd
        ? { etcd: { store: cluster.etcd, id: `batch-${process.pid}`, ttlSeconds: 3 } }
        : { peers: cluster.peers }),
      token: cluster.token,
      intervalMs: o.intervalMs ?? 1000,
      params: o.params,
      onEvent: (e) => {
        if (e.event === 'outcome' && e.outcome === 'moved') where.get(e.name)?.push(e.to);
        o.onEvent?.(e);
      },
      onLook: o.onLook,
    });
  const finished = new Map<string, BatchJobResult>();
  try {
    let lastProgress = 0;
    while (finished.size < o.jobs.length) {
      o.signal?.throwIfAborted();
      const elapsed = Date.now() - started;
      if (elapsed > timeoutMs)
        throw new FerryError(
          'FERRY_INTERNAL',
          `jobs ${o.jobs
            .filter((j) => !finished.has(j.name))
            .map((j) => j.name)
            .join(', ')} had not ended after ${timeoutMs} ms`,
        );
      for (const job of o.jobs) {
        if (finished.has(job.name)) continue;
        const out = outputs.get(job.name)!;
        const text = existsSync(out) ? readFileSync(out, 'utf8') : '';
        if (!text.includes('\n')) continue;
        finished.set(job.name, {
          ...job,
          finishedMs: elapsed,
          ok: text.startsWith(`ok ${job.name} `),
          output: text.trim(),
          hosts: where.get(job.name)!,
        });
      }
      if (o.onProgress && elapsed - lastProgress >= 1000) {
        lastProgress = elapsed;
        o.onProgress({ elapsedMs: elapsed, perHost: await jobsPerHost(cluster), done: finished.size });
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    if (balancer) await balancer.stop();
    await killLeft(cluster);
  }
  const loads = await gatherLoads(cluster.peers, cluster.token);
  const migrations = [...loads.values()]
    .flatMap((l) => (l instanceof Error ? [] : l.history))
    .filter((h) => ids.has(h.job))
    .sort((a, b) => a.at - b.at);
  const jobs = o.jobs.map((j) => finished.get(j.name)!);
  return {
    jobs,
    makespanMs: Math.max(...jobs.map((j) => j.finishedMs)),
    meanSlowdown: jobs.reduce((n, j) => n + j.finishedMs / alone(j), 0) / jobs.length,
    idealMs,
    migrations,
    balanced: o.balance,
  };
}

async function jobsPerHost(cluster: LocalCluster): Promise<number[]> {
  const loads = await gatherLoads(cluster.peers, cluster.token);
  return cluster.peers.map((p) => {
    const l = loads.get(p);
    return l instanceof Error || !l ? 0 : l.jobs.length;
  });
}

/** Stop what is left of a batch that did not end (a failure, a timeout): nothing outlives it. */
async function killLeft(cluster: LocalCluster): Promise<void> {
  const loads = await gatherLoads(cluster.peers, cluster.token);
  for (const [peer, load] of loads) {
    if (load instanceof Error) continue;
    for (const j of load.jobs)
      await callAgent(endpointOf(peer, cluster.token), 'POST', `/v1/jobs/${j.id}/kill`, {}, 10_000).catch(
        () => {},
      );
  }
}
