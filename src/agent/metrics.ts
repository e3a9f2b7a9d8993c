// The agent in Prometheus' text exposition format.
import type { Migrations } from './receive.js';
import type { Registry } from './registry.js';
import type { LoadReport } from './jobs.js';

export interface MetricsInput {
  registry: Registry;
  migrations: Migrations;
  counters: { dumps: number; restores: number; requests: number; refused: number };
  status: Record<string, unknown>;
  load: LoadReport;
}

type Sample = [labels: Record<string, string>, value: number];

function family(name: string, type: 'gauge' | 'counter', help: string, samples: Sample[]): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`];
  for (const [labels, value] of samples) {
    const l = Object.entries(labels).map(
      ([k, v]) => `${k}="${v.replace(/["\\\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`))}"`,
    );
    lines.push(`${name}${l.length > 0 ? `{${l.join(',')}}` : ''} ${value}`);
  }
  return lines.join('\n');
}

function countBy<T>(
  items: readonly T[],
  key: (t: T) => string,
  keys: readonly string[],
  label: string,
): Sample[] {
  return keys.map((k) => [{ [label]: k }, items.filter((i) => key(i) === k).length]);
}

export function metricsText({ registry, migrations, counters, status, load }: MetricsInput): string {
  const processes = registry.list();
  const all = migrations.list();
  const [load1] = status.loadavg as number[];
  const memory = status.memory as { totalBytes: number; freeBytes: number };
  return `${[
    family('ferry_agent_up', 'gauge', 'The agent answers.', [[{ ferry: String(status.ferry) }, 1]]),
    family('ferry_agent_uptime_seconds', 'gauge', 'Seconds since the agent started.', [
      [{}, Number(status.uptimeSeconds)],
    ]),
    family('ferry_host_load1', 'gauge', 'Load average over one minute.', [[{}, load1!]]),
    family('ferry_host_memory_free_bytes', 'gauge', 'Free memory of the host.', [[{}, memory.freeBytes]]),
    family('ferry_host_memory_bytes', 'gauge', 'Memory of the host.', [[{}, memory.totalBytes]]),
    family(
      'ferry_managed_processes',
      'gauge',
      'Processes the agent restored, by state.',
      countBy(processes, (p) => p.state, ['held', 'running', 'exited'], 'state'),
    ),
    family(
      'ferry_migrations_received',
      'gauge',
      'Migrations received since the agent started, by state.',
      countBy(all, (m) => m.state, ['receiving', 'restoring', 'held', 'running', 'aborted'], 'state'),
    ),
    family('ferry_migration_received_bytes_total', 'counter', 'Image bytes received in migrations.', [
      [{}, all.reduce((n, m) => n + m.bytes, 0)],
    ]),
    family(
      'ferry_host_capacity_cores',
      'gauge',
      'Cores the managed jobs may use (cgroup quota, else CPUs).',
      [[{}, load.host.capacity]],
    ),
    family('ferry_host_demand_cores', 'gauge', 'Cores the managed jobs want (runnable threads, smoothed).', [
      [{}, load.host.demand],
    ]),
    family('ferry_host_load', 'gauge', 'Demand over capacity: above 1, jobs wait for a CPU.', [
      [{}, load.host.load],
    ]),
    ...(load.host.pressure === null
      ? []
      : [
          family('ferry_host_cpu_pressure', 'gauge', 'CPU pressure of the cgroup (PSI some avg10, %).', [
            [{}, load.host.pressure],
          ]),
        ]),
    family(
      'ferry_job_cpu_cores',
      'gauge',
      'Cores each managed job used lately.',
      load.jobs.map((j) => [{ job: j.id }, j.cpuRate]),
    ),
    family(
      'ferry_job_rss_bytes',
      'gauge',
      'Resident memory of each managed job.',
      load.jobs.map((j) => [{ job: j.id }, j.rssBytes]),
    ),
    family(
      'ferry_jobs_moved_total',
      'counter',
      'Requests to move a job away, by outcome.',
      countBy(
        load.history,
        (h) => h.outcome,
        ['moving', 'moved', 'failed', 'exited', 'in-doubt', 'refused'],
        'outcome',
      ),
    ),
    family('ferry_dumps_total', 'counter', 'Dumps done on request.', [[{}, counters.dumps]]),
    family('ferry_restores_total', 'counter', 'Restores done on request.', [[{}, counters.restores]]),
    family('ferry_http_requests_total', 'counter', 'HTTP requests received.', [[{}, counters.requests]]),
    family('ferry_http_refused_total', 'counter', 'Requests refused for a missing or wrong token or uid.', [
      [{}, counters.refused],
    ]),
  ].join('\n')}\n`;
}
