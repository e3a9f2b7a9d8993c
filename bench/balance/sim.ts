// bench/balance/sim: the balancing policy over a heavy-tailed trace at 10 to 10,000 hosts, against
// no migration, placement only (each job placed at birth on the least loaded host the placer knows
// of), and the ideal bound (total work over capacity, or the longest job).
//   npm run bench:balance-sim -- [--hosts 10,100,1000] [--load 0.7] [--alpha 1.1] [--seed 1]
//                                [--trace FILE.jsonl] [--json]
// A recorded trace is one JSON object per line: {arrival, host, cpuSeconds, rssBytes, dirtyBytesPerSecond}.
import { readFileSync } from 'node:fs';
import { formatBytes, renderTable } from '../../src/cli/format.js';
import {
  idealBound,
  simulate,
  syntheticTrace,
  type SimResult,
  type Strategy,
  type TraceJob,
} from './simulate.js';
import { benchArgs } from '../stats.js';

const { values } = benchArgs({
  hosts: { type: 'string', default: '10,100,1000' },
  load: { type: 'string', default: '0.7' },
  alpha: { type: 'string', default: '1.1' },
  span: { type: 'string', default: '600' },
  seed: { type: 'string', default: '1' },
  trace: { type: 'string' },
  json: { type: 'boolean', default: false },
});

const STRATEGIES: Strategy[] = ['none', 'placement', 'balance', 'placement+balance'];

function recorded(path: string): TraceJob[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l, i) => {
      const j = JSON.parse(l) as Partial<TraceJob>;
      if (typeof j.arrival !== 'number' || typeof j.host !== 'number' || typeof j.cpuSeconds !== 'number')
        throw new Error(`${path}:${i + 1}: a job needs arrival, host and cpuSeconds`);
      return { rssBytes: 64 << 20, dirtyBytesPerSecond: 0, ...j } as TraceJob;
    });
}

const report: { hosts: number; jobs: number; ideal: number; results: SimResult[] }[] = [];
for (const hosts of values.hosts.split(',').map(Number)) {
  const trace = values.trace
    ? recorded(values.trace)
    : syntheticTrace({
        hosts,
        load: Number(values.load),
        spanSeconds: Number(values.span),
        alpha: Number(values.alpha),
        minSeconds: 1,
        maxSeconds: 3000,
        burst: 8,
        submitShare: 0.25,
        seed: Number(values.seed),
      });
  const ideal = idealBound(trace, hosts);
  const results: SimResult[] = [];
  for (const strategy of STRATEGIES) {
    try {
      results.push(
        simulate(trace, strategy, {
          hosts,
          stepSeconds: 0.1,
          intervalSeconds: 1,
          bandwidthBytesPerSecond: 125e6,
        }),
      );
    } catch (err) {
      process.stderr.write(`${hosts} hosts, ${strategy}: ${String(err)}\n`);
    }
  }
  report.push({ hosts, jobs: trace.length, ideal, results });
  if (values.json) continue;
  const placement = results.find((r) => r.strategy === 'placement');
  process.stdout.write(
    `\n${hosts} hosts, ${trace.length} jobs, ideal bound ${ideal.toFixed(0)} s\n` +
      renderTable(
        [
          { header: 'strategy' },
          { header: 'makespan', align: 'right' },
          { header: 'x ideal', align: 'right' },
          { header: 'mean slowdown', align: 'right' },
          { header: 'vs placement', align: 'right' },
          { header: 'migrations', align: 'right' },
          { header: 'moved', align: 'right' },
          { header: 'took' },
        ],
        results.map((r) => [
          r.strategy,
          `${r.makespan.toFixed(0)} s`,
          (r.makespan / ideal).toFixed(2),
          r.meanSlowdown.toFixed(2),
          placement
            ? `${(((r.meanSlowdown - placement.meanSlowdown) / placement.meanSlowdown) * 100).toFixed(0)}%`
            : '-',
          String(r.migrations),
          formatBytes(r.bytesMoved),
          `${(r.wallMs / 1000).toFixed(1)} s`,
        ]),
      ) +
      '\n',
  );
}
if (values.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
