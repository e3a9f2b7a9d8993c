// ferry cluster status (--peers <host:port,...> | --etcd <url,...>) [--token-file <f>] [--tls-ca <f>] [--json] [--watch]
import type { HistoryEntry, LoadReport } from '../agent/jobs.js';
import { gatherLoads } from '../cluster/balancer.js';
import { FerryError } from '../errors.js';
import { clusterMembers } from './etcd-option.js';
import type { ClusterStore, Intent } from '../cluster/etcd.js';
import { agentToken, printJson, readCa, type Command } from './command.js';
import { formatBytes, formatMs, renderTable } from './format.js';

const WATCH_MS = 2_000;
const LAST_MOVES = 10;

type Loads = Map<string, LoadReport | Error>;

/** What etcd holds besides the members (`--etcd`): who leads, moves under way, checkpoints. */
interface EtcdView {
  leader: string | null;
  intents: Intent[];
  checkpoints: {
    id: string;
    name: string;
    host: string;
    checkpoint: string | null;
    checkpointAt: number | null;
  }[];
}

async function etcdView(store: ClusterStore): Promise<EtcdView> {
  return {
    leader: (await store.leader()) ?? null,
    intents: await store.intents(),
    checkpoints: (await store.jobs()).map((r) => ({
      id: r.id,
      name: r.name,
      host: r.host,
      checkpoint: r.checkpoint ?? null,
      checkpointAt: r.checkpointAt ?? null,
    })),
  };
}

function renderEtcd(v: EtcdView, now: number): string {
  const intents = v.intents.map((i) => `${i.kind} ${i.name} ${i.from || '-'} -> ${i.to} (by ${i.leader})`);
  const checkpoints = renderTable(
    ['checkpointed job', 'host', 'last checkpoint'].map((header) => ({ header })),
    v.checkpoints.map((c) => [
      c.name,
      c.host || '(to be restored)',
      c.checkpointAt === null ? 'none yet' : `${formatMs(now - c.checkpointAt)} ago`,
    ]),
  );
  return [
    `leader: ${v.leader ?? 'none (no balancer runs)'}`,
    `intents: ${intents.length === 0 ? '(none)' : intents.join('; ')}`,
    ...(v.checkpoints.length === 0 ? [] : ['', checkpoints]),
  ].join('\n');
}

/** What `ferry cluster status --json` prints. */
export function clusterStatus(loads: Loads): {
  hosts: ({ peer: string; error: string } | ({ peer: string } & LoadReport['host']))[];
  jobs: (LoadReport['jobs'][number] & { host: string })[];
  moving: HistoryEntry[];
  last: HistoryEntry[];
} {
  const reports = [...loads].filter((e): e is [string, LoadReport] => !(e[1] instanceof Error));
  const history = reports.flatMap(([, r]) => r.history).sort((a, b) => a.at - b.at);
  return {
    hosts: [...loads].map(([peer, r]) =>
      r instanceof Error ? { peer, error: r.message } : { peer, ...r.host },
    ),
    jobs: reports.flatMap(([peer, r]) => r.jobs.map((j) => ({ ...j, host: peer }))),
    moving: history.filter((h) => h.outcome === 'moving'),
    last: history.filter((h) => h.outcome !== 'moving').slice(-LAST_MOVES),
  };
}

export function renderStatus(s: ReturnType<typeof clusterStatus>): string {
  const hosts = renderTable(
    ['host', 'capacity', 'demand', 'load', 'pressure', 'mem avail', 'jobs', 'state'].map((header, i) => ({
      header,
      align: i > 0 && i < 7 ? ('right' as const) : ('left' as const),
    })),
    s.hosts.map((h) =>
      'error' in h
        ? [h.peer, '-', '-', '-', '-', '-', '-', `unreachable: ${h.error}`]
        : [
            h.peer,
            h.capacity.toFixed(2),
            h.demand.toFixed(2),
            h.load.toFixed(2),
            h.pressure === null ? '-' : `${h.pressure.toFixed(1)}%`,
            formatBytes(h.memAvailableBytes),
            String(s.jobs.filter((j) => j.host === h.peer).length),
            [h.drained ? 'drained' : '', h.busy ? 'migrating' : ''].filter(Boolean).join(', ') || 'ok',
          ],
    ),
  );
  const jobs = renderTable(
    ['job', 'host', 'pid', 'cpu', 'cores', 'rss', 'age', 'been on'].map((header) => ({ header })),
    s.jobs.map((j) => [
      `${j.name}${j.pinned ? ' (pinned)' : ''}`,
      j.host,
      String(j.pid),
      `${j.cpuSeconds.toFixed(1)} s`,
      j.cpuRate.toFixed(2),
      formatBytes(j.rssBytes),
      formatMs(j.ageMs),
      j.hops.join(' ') || '-',
    ]),
  );
  const move = (h: HistoryEntry): string[] => [
    new Date(h.at).toISOString().slice(11, 19),
    h.name,
    `${h.from} -> ${h.to}`,
    h.outcome,
    h.downtimeMs === undefined ? '-' : formatMs(h.downtimeMs),
    h.bytes === undefined ? '-' : formatBytes(h.bytes),
    h.error ?? h.reason,
  ];
  const moves = (rows: HistoryEntry[]): string =>
    rows.length === 0
      ? '(none)'
      : renderTable(
          ['time', 'job', 'move', 'outcome', 'downtime', 'bytes', 'reason'].map((header) => ({ header })),
          rows.map(move),
        );
  return [
    hosts,
    '',
    s.jobs.length === 0 ? 'no managed jobs' : jobs,
    '',
    `migrations in flight: ${moves(s.moving)}`,
    '',
    `last migrations: ${moves(s.last)}`,
  ].join('\n');
}

export const clusterCommand: Command = {
  name: 'cluster',
  summary: 'show the cluster: hosts with capacity and load, their jobs, migrations in flight and past',
  usage:
    'ferry cluster status (--peers <host:port,...> | --etcd <url,...>) [--token-file <f>] [--tls-ca <f>] [--json] [--watch]',
  options: {
    peers: { type: 'string' },
    etcd: { type: 'string' },
    'token-file': { type: 'string' },
    'tls-ca': { type: 'string' },
    watch: { type: 'boolean' },
  },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    if (positionals[0] !== 'status')
      throw new FerryError('FERRY_USAGE', `unknown cluster command "${positionals[0]}" (status)`);
    const token = agentToken(values['token-file']);
    const ca = readCa(values['tls-ca']);
    const members = await clusterMembers(values);
    try {
      for (;;) {
        const loads = clusterStatus(await gatherLoads(await members.list(), token, ca));
        const etcd = members.store && (await etcdView(members.store));
        const status = { ...loads, ...(etcd ? { etcd } : {}) };
        if (values.json) {
          if (values.watch) process.stdout.write(`${JSON.stringify(status)}\n`);
          else printJson(status);
        } else
          process.stdout.write(
            `${values.watch ? '\x1b[H\x1b[2J' : ''}${renderStatus(loads)}${etcd ? `\n\n${renderEtcd(etcd, Date.now())}` : ''}\n`,
          );
        if (!values.watch) return status.hosts.some((h) => 'error' in h) ? 1 : 0;
        await new Promise((resolve) => setTimeout(resolve, WATCH_MS));
      }
    } finally {
      members.close();
    }
  },
};
