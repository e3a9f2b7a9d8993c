// bench/balance/real: a batch of CPU-bound jobs, every one started on one host of a local cluster
// (agents on loopback, each confining its jobs to a CPU quota), run without the balancer and with
// it: makespan, mean slowdown and migrations, next to the ideal bound. Every job checks its result.
//   npm run bench:balance -- [--hosts 3] [--cpus 0.4] [--jobs 6] [--cpu-seconds 4] [--heavy]
//                            [--seed 1] [--policy default] [--etcd] [--json]
// --heavy: job lengths drawn from a Pareto distribution (shape 1.1) with the same mean.
// --etcd: the agents register in etcd (a one-member cluster on loopback, Debian's etcd-server) and
// the balancer finds them and their loads there, leading by election, each move an intent.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatMs, renderTable } from '../../src/cli/format.js';
import { POLICIES } from '../../src/cluster/policy.js';
import {
  calibrateJob,
  runBatch,
  startLocalCluster,
  type BatchJob,
  type BatchResult,
} from '../../src/cluster/local.js';
import { startLocalEtcd } from '../../src/cluster/local-etcd.js';
import { benchArgs, median } from '../stats.js';
import { random } from './simulate.js';

const { values } = benchArgs({
  hosts: { type: 'string', default: '3' },
  cpus: { type: 'string', default: '0.4' },
  jobs: { type: 'string', default: '6' },
  'cpu-seconds': { type: 'string', default: '4' },
  heavy: { type: 'boolean', default: false },
  seed: { type: 'string', default: '1' },
  policy: { type: 'string', default: 'default' },
  etcd: { type: 'boolean', default: false },
  json: { type: 'boolean', default: false },
});

const hosts = Number(values.hosts);
const cpus = Number(values.cpus);
const mean = Number(values['cpu-seconds']);
const rand = random(Number(values.seed));
const ALPHA = 1.1;
const jobs: BatchJob[] = Array.from({ length: Number(values.jobs) }, (_, i) => ({
  name: `job-${i + 1}`,
  // Pareto with shape ALPHA and mean `mean`: minimum mean * (ALPHA - 1) / ALPHA, capped at 8x the mean.
  cpuSeconds: values.heavy
    ? Math.min(8 * mean, (mean * (ALPHA - 1)) / ALPHA / Math.pow(1 - rand(), 1 / ALPHA))
    : mean,
}));

const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-balance-'));
const results: BatchResult[] = [];
const failures: string[] = [];
const etcd = values.etcd ? await startLocalEtcd({ members: 1, dir }) : undefined;
try {
  const cluster = await startLocalCluster({ hosts, cpus, dir, etcd: etcd?.urls });
  try {
    const rate = await calibrateJob();
    process.stderr.write(`calibrated: ${(rate / 1e6).toFixed(0)} M rounds per CPU-second\n`);
    for (const balance of [false, true]) {
      process.stderr.write(`${balance ? 'with' : 'without'} the balancer...\n`);
      try {
        results.push(
          await runBatch(cluster, {
            jobs,
            host: 0,
            balance,
            cpus,
            iterationsPerSecond: rate,
            dir: join(dir, balance ? 'on' : 'off'),
            params: POLICIES[values.policy],
            onEvent: (e) => process.stderr.write(`  ${JSON.stringify(e)}\n`),
          }),
        );
      } catch (err) {
        failures.push(`${balance ? 'with' : 'without'} the balancer: ${String(err)}`);
      }
    }
  } finally {
    await cluster.stop();
  }
} finally {
  await etcd?.stop();
  rmSync(dir, { recursive: true, force: true });
}

const downtimes = (r: BatchResult): number[] =>
  r.migrations.flatMap((m) => (m.downtimeMs === undefined ? [] : [m.downtimeMs]));
const off = results.find((r) => !r.balanced);
const summary = results.map((r) => ({
  balancer: r.balanced ? 'on' : 'off',
  makespanMs: r.makespanMs,
  idealMs: r.idealMs,
  xIdeal: r.makespanMs / r.idealMs,
  xUnbalanced: off ? r.makespanMs / off.makespanMs : null,
  meanSlowdown: r.meanSlowdown,
  migrations: r.migrations.filter((m) => m.outcome === 'moved').length,
  medianDowntimeMs: downtimes(r).length > 0 ? median(downtimes(r)) : undefined,
  correct: r.jobs.filter((j) => j.ok).length,
  jobs: r.jobs.length,
}));
if (values.json)
  process.stdout.write(
    `${JSON.stringify({ hosts, cpus, membership: values.etcd ? 'etcd' : 'peers', jobs, summary, results, failures }, null, 2)}\n`,
  );
else {
  process.stdout.write(
    `${hosts} hosts at ${cpus} CPU, ${jobs.length} jobs (${jobs.map((j) => j.cpuSeconds.toFixed(1)).join(', ')} CPU-s), all started on one host, membership: ${values.etcd ? 'etcd' : 'static peers'}\n` +
      renderTable(
        [
          { header: 'balancer' },
          { header: 'makespan', align: 'right' },
          { header: 'x ideal', align: 'right' },
          { header: 'x unbalanced', align: 'right' },
          { header: 'mean slowdown', align: 'right' },
          { header: 'migrations', align: 'right' },
          { header: 'downtime (median)', align: 'right' },
          { header: 'correct' },
        ],
        summary.map((s) => [
          s.balancer,
          formatMs(s.makespanMs),
          s.xIdeal.toFixed(2),
          s.xUnbalanced === null ? '-' : s.xUnbalanced.toFixed(2),
          s.meanSlowdown.toFixed(2),
          String(s.migrations),
          s.medianDowntimeMs === undefined ? '-' : formatMs(s.medianDowntimeMs),
          `${s.correct}/${s.jobs}`,
        ]),
      ) +
      `\nideal bound: ${formatMs(results[0]?.idealMs ?? 0)} (total work over total capacity, or the longest job alone)\n`,
  );
}
for (const f of failures) process.stderr.write(`FAILED ${f}\n`);
process.exitCode = failures.length > 0 || summary.some((s) => s.correct < s.jobs) ? 1 : 0;
