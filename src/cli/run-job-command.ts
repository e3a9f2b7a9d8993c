// ferry run (--agent <host:port>[,<host:port>...] | --etcd <url,...>) [--token-file <f>] [--tls-ca <f>] [--name <name>] [--stdout <f>] [--stderr <f>]
//   [--no-migrate] [--checkpoint-every <interval> --shared-dir <dir>] [--json] -- <cmd> [args...]
import { resolve } from 'node:path';
import { FerryError } from '../errors.js';
import { callAgent, parseAddress } from '../migrate/client.js';
import { gatherLoads, hostView } from '../cluster/balancer.js';
import { placeJob } from '../cluster/policy.js';
import { clusterMembers } from './etcd-option.js';
import { agentToken, parseDuration, printResult, readCa, type Command } from './command.js';

interface Started {
  id: string;
  name: string;
  pid: number;
  agent: string;
}

/** With several agents, the least loaded that answers (placement at birth); with one, that one. */
async function chooseAgent(
  agents: string[],
  token: string | undefined,
  ca: Buffer | undefined,
): Promise<string> {
  agents.forEach(parseAddress);
  if (agents.length === 1) return agents[0]!;
  const loads = await gatherLoads(agents, token, ca);
  const hosts = [...loads].flatMap(([peer, l]) => (l instanceof Error ? [] : [hostView(peer, l, false)]));
  const chosen = placeJob(hosts);
  if (!chosen)
    throw new FerryError(
      'FERRY_CONNECTION',
      `no agent of ${agents.join(', ')} can take the job: ${[...loads.values()].map((l) => (l instanceof Error ? l.message : 'no memory to spare')).join('; ')}`,
    );
  return chosen.id;
}

export const runJobCommand: Command = {
  name: 'run',
  summary:
    'start a job under an agent (the least loaded of several), which the balancer may move; checkpointed with --checkpoint-every',
  usage:
    'ferry run (--agent <host:port>[,<host:port>...] | --etcd <url,...>) [--token-file <f>] [--tls-ca <f>] [--name <name>] [--stdout <f>] [--stderr <f>]\n' +
    '       [--no-migrate] [--checkpoint-every <interval> --shared-dir <dir>] [--json] -- <cmd> [args...]',
  options: {
    agent: { type: 'string' },
    etcd: { type: 'string' },
    'token-file': { type: 'string' },
    'tls-ca': { type: 'string' },
    name: { type: 'string' },
    stdout: { type: 'string' },
    stderr: { type: 'string' },
    'no-migrate': { type: 'boolean' },
    'checkpoint-every': { type: 'string' },
    'shared-dir': { type: 'string' },
  },
  positionals: { min: 1, max: Infinity },
  async run({ values, positionals }) {
    if ((typeof values.agent === 'string') === (values.etcd !== undefined))
      throw new FerryError(
        'FERRY_USAGE',
        'give the agent to run the job under (--agent <host:port>[,<host:port>...]), or etcd to find them (--etcd <url,...>)',
      );
    const every = values['checkpoint-every'];
    const shared = values['shared-dir'];
    if ((typeof every === 'string') !== (typeof shared === 'string'))
      throw new FerryError(
        'FERRY_USAGE',
        '--checkpoint-every and --shared-dir go together: checkpoints go where every host sees them',
      );
    const checkpointEveryMs =
      typeof every === 'string' ? Math.round(parseDuration('checkpoint-every', every)) : undefined;
    const token = agentToken(values['token-file']);
    const ca = readCa(values['tls-ca']);
    let agents: string[];
    if (typeof values.agent === 'string') agents = values.agent.split(',');
    else {
      const members = await clusterMembers({ etcd: values.etcd });
      agents = await members.list().finally(() => members.close());
      if (agents.length === 0) throw new FerryError('FERRY_CONNECTION', `no agent is registered in etcd`);
    }
    const agent = await chooseAgent(agents, token, ca);
    const file = (name: 'stdout' | 'stderr'): string | undefined =>
      typeof values[name] === 'string' ? resolve(values[name]) : undefined;
    const endpoint = { ...parseAddress(agent), token, ca };
    const started = await callAgent<Started>(
      endpoint,
      'POST',
      '/v1/jobs',
      {
        argv: positionals,
        cwd: process.cwd(),
        env: Object.entries(process.env).map(([k, v]) => `${k}=${v ?? ''}`),
        name: values.name,
        stdout: file('stdout'),
        stderr: file('stderr'),
        noMigrate: values['no-migrate'] === true,
        ...(checkpointEveryMs === undefined ? {} : { checkpointEveryMs, sharedDir: resolve(String(shared)) }),
      },
      30_000,
    );
    printResult(
      values.json,
      { ...started, agent },
      (s) => `started job ${s.id} (${s.name}) as pid ${s.pid} on ${s.agent}`,
    );
    return 0;
  },
};
