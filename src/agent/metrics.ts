// The agent in Prometheus' text exposition format.
import type { Migrations } from './receive.js';
import type { Registry } from './registry.js';

export interface MetricsInput {
  registry: Registry;
  migrations: Migrations;
  counters: { dumps: number; restores: number; requests: number; refused: number };
  status: Record<string, unknown>;
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

export function metricsText({ registry, migrations, counters, status }: MetricsInput): string {
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
    family('ferry_dumps_total', 'counter', 'Dumps done on request.', [[{}, counters.dumps]]),
    family('ferry_restores_total', 'counter', 'Restores done on request.', [[{}, counters.restores]]),
    family('ferry_http_requests_total', 'counter', 'HTTP requests received.', [[{}, counters.requests]]),
    family('ferry_http_refused_total', 'counter', 'Requests refused for a missing or wrong token or uid.', [
      [{}, counters.refused],
    ]),
  ].join('\n')}\n`;
}
