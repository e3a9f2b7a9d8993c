// ferry balancer (--peers <host:port,...> | --etcd <url,...> [--id <name>] [--lease-ttl <s>]) [--token-file <f>]
//   [--tls-ca <f>] [--interval <ms>] [--policy <name>] [--dry-run]
//   [--http <addr:port> [--tls-cert <f> --tls-key <f> | --insecure]] [--json]
import { startBalancer, type DecisionEvent } from '../cluster/balancer.js';
import { POLICIES } from '../cluster/policy.js';
import { FerryError } from '../errors.js';
import { agentToken, parseList, parseMs, readCa, warnOnStderr, type Command } from './command.js';
import { joinEtcd } from './etcd-option.js';
import { startDashboard, type Dashboard } from '../cluster/dashboard.js';
import { checkListen, readTls } from '../agent/listen.js';
import { parseAddress } from '../migrate/client.js';
import { hostname } from 'node:os';
import { formatBytes, formatMs } from './format.js';

/** One line for a person. */
export function describeEvent(e: DecisionEvent): string {
  const time = new Date(e.at).toISOString().slice(11, 19);
  switch (e.event) {
    case 'decision':
      return `${time} ${e.dryRun ? 'would move' : 'move'} ${e.decision.name} ${e.decision.from} -> ${e.decision.to}: ${e.decision.reason}`;
    case 'outcome':
      return e.outcome === 'moved'
        ? `${time} moved ${e.name} ${e.from} -> ${e.to}: downtime ${formatMs(e.downtimeMs ?? 0)}, total ${formatMs(e.totalMs ?? 0)}, ${formatBytes(e.bytes ?? 0)}`
        : `${time} ${e.outcome} ${e.name} ${e.from} -> ${e.to}: ${e.error ?? ''}`;
    case 'unreachable':
      return `${time} cannot reach ${e.peer}: ${e.error}`;
    case 'reachable':
      return `${time} ${e.peer} answers again`;
    case 'campaigning':
      return `${time} ${e.id} campaigns for leadership (a standby until it leads)`;
    case 'elected':
      return `${time} ${e.id} leads: it acts for the cluster`;
    case 'deposed':
      return `${time} ${e.id} no longer leads: ${e.why}`;
    case 'recovery':
      return e.outcome === 'recovered'
        ? `${time} restored ${e.name} on ${e.to} from its checkpoint of ${new Date(e.checkpointAt ?? 0).toISOString().slice(11, 19)} (${e.from || 'its host'} died)`
        : `${time} failed to restore ${e.name} on ${e.to}: ${e.error ?? ''}`;
    case 'lost':
      return `${time} lost ${e.name}: ${e.host} died before its first checkpoint`;
  }
}

/** --peers a:1,b:2 */
export const parsePeers = (value: unknown): string[] =>
  parseList(value, 'give the agents: --peers <host:port>,<host:port>,...');

/** A leader's lease: a standby takes over this long after the leader last renewed it. */
const DEFAULT_LEADER_TTL_S = 3;

export const balancerCommand: Command = {
  name: 'balancer',
  summary:
    'balance load: move managed jobs from busy agents to idle ones, one line per decision; with etcd, lead or stand by; --http: a dashboard',
  usage:
    'ferry balancer (--peers <host:port,...> | --etcd <url,...> [--id <name>] [--lease-ttl <s>]) [--token-file <f>]\n' +
    '       [--tls-ca <f>] [--interval <ms>] [--policy <name>] [--dry-run]\n' +
    '       [--http <addr:port> [--tls-cert <f> --tls-key <f> | --insecure]] [--json]',
  options: {
    peers: { type: 'string' },
    etcd: { type: 'string' },
    id: { type: 'string' },
    'lease-ttl': { type: 'string' },
    'token-file': { type: 'string' },
    'tls-ca': { type: 'string' },
    interval: { type: 'string' },
    policy: { type: 'string' },
    'dry-run': { type: 'boolean' },
    http: { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    insecure: { type: 'boolean' },
  },
  positionals: { min: 0, max: 0 },
  async run({ values }) {
    const name = typeof values.policy === 'string' ? values.policy : 'default';
    const params = POLICIES[name];
    if (!params) throw new FerryError('FERRY_USAGE', `--policy is ${Object.keys(POLICIES).join(', ')}`);
    if ((values.peers === undefined) === (values.etcd === undefined))
      throw new FerryError(
        'FERRY_USAGE',
        'give the agents (--peers a:port,b:port) or etcd (--etcd http://host:port)',
      );
    if (values.id !== undefined && values.etcd === undefined)
      throw new FerryError('FERRY_USAGE', '--id names this balancer in etcd: it goes with --etcd');
    const cert = values['tls-cert'];
    const key = values['tls-key'];
    if ((typeof cert === 'string') !== (typeof key === 'string'))
      throw new FerryError('FERRY_USAGE', '--tls-cert and --tls-key go together');
    if (values.http === undefined && (cert !== undefined || values.insecure !== undefined))
      throw new FerryError(
        'FERRY_USAGE',
        '--tls-cert, --tls-key and --insecure are for the dashboard: give --http <addr:port>',
      );
    const token = agentToken(values['token-file']);
    const id = typeof values.id === 'string' ? values.id : `${hostname()}-${process.pid}`;
    const peers = values.peers === undefined ? undefined : parsePeers(values.peers);
    const ca = readCa(values['tls-ca']);
    let dashboard: Dashboard | undefined;
    if (typeof values.http === 'string') {
      const { host, port } = parseAddress(values.http);
      checkListen(host, typeof cert === 'string', values.insecure === true);
      if (token === undefined)
        warnOnStderr(`no --token-file: anyone who reaches ${values.http} may drain hosts`);
      dashboard = await startDashboard({
        host,
        port,
        token,
        ca,
        tls: typeof cert === 'string' && typeof key === 'string' ? readTls(cert, key) : undefined,
        id,
        membership: peers ? 'peers' : 'etcd',
        describe: describeEvent,
      });
      process.stdout.write(
        `${values.json ? JSON.stringify({ event: 'dashboard', at: Date.now(), url: dashboard.url }) : `dashboard at ${dashboard.url}`}\n`,
      );
    }
    const etcd = await joinEtcd(values.etcd, values['lease-ttl'], DEFAULT_LEADER_TTL_S);
    const balancer = startBalancer({
      ...(etcd ? { etcd: { ...etcd, id } } : { peers }),
      token,
      ca,
      intervalMs: parseMs('interval', values.interval),
      dryRun: values['dry-run'] === true,
      params,
      onEvent: (e) => {
        process.stdout.write(`${values.json ? JSON.stringify(e) : describeEvent(e)}\n`);
        dashboard?.event(e);
      },
      onLook: (loads, acting) => dashboard?.look(loads, acting),
    });
    await new Promise<void>((resolve) => {
      const stop = (): void =>
        void balancer
          .stop()
          .then(() => dashboard?.close())
          .then(() => {
            etcd?.store.close();
            resolve();
          });
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    return 0;
  },
};
