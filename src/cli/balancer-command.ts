// ferry balancer --peers <host:port,...> [--token-file <f>] [--tls-ca <f>] [--interval <ms>] [--policy <name>]
//   [--dry-run] [--json]
import { startBalancer, type DecisionEvent } from '../cluster/balancer.js';
import { POLICIES } from '../cluster/policy.js';
import { FerryError } from '../errors.js';
import { agentToken, parseMs, readCa, type Command } from './command.js';
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
  }
}

/** --peers a:1,b:2 */
export function parsePeers(value: unknown): string[] {
  if (typeof value !== 'string' || value.trim() === '')
    throw new FerryError('FERRY_USAGE', 'give the agents: --peers <host:port>,<host:port>,...');
  return value
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
}

export const balancerCommand: Command = {
  name: 'balancer',
  summary: 'balance load: move managed jobs from busy agents to idle ones, one line per decision',
  usage:
    'ferry balancer --peers <host:port,...> [--token-file <f>] [--tls-ca <f>] [--interval <ms>] [--policy <name>]\n' +
    '       [--dry-run] [--json]',
  options: {
    peers: { type: 'string' },
    'token-file': { type: 'string' },
    'tls-ca': { type: 'string' },
    interval: { type: 'string' },
    policy: { type: 'string' },
    'dry-run': { type: 'boolean' },
  },
  positionals: { min: 0, max: 0 },
  async run({ values }) {
    const name = typeof values.policy === 'string' ? values.policy : 'default';
    const params = POLICIES[name];
    if (!params) throw new FerryError('FERRY_USAGE', `--policy is ${Object.keys(POLICIES).join(', ')}`);
    const balancer = startBalancer({
      peers: parsePeers(values.peers),
      token: agentToken(values['token-file']),
      ca: readCa(values['tls-ca']),
      intervalMs: parseMs('interval', values.interval),
      dryRun: values['dry-run'] === true,
      params,
      onEvent: (e) => process.stdout.write(`${values.json ? JSON.stringify(e) : describeEvent(e)}\n`),
    });
    await new Promise<void>((resolve) => {
      const stop = (): void => {
        balancer.stop();
        resolve();
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    return 0;
  },
};
