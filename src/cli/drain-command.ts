// ferry drain <host:port> (--peers <host:port,...> | --etcd <url,...>) [--token-file <f>] [--tls-ca <f>] [--json]
// ferry undrain <host:port> [--token-file <f>] [--tls-ca <f>] [--json]
import { drainHost } from '../cluster/drain.js';
import { callAgent, parseAddress } from '../migrate/client.js';
import { endpointOf } from '../cluster/balancer.js';
import { describeEvent } from './balancer-command.js';
import { clusterMembers } from './etcd-option.js';
import { agentToken, printJson, printResult, readCa, type Command } from './command.js';

export const drainCommand: Command = {
  name: 'drain',
  summary: 'move every job off an agent, one at a time, and take no new one there until it is undrained',
  usage:
    'ferry drain <host:port> (--peers <host:port,...> | --etcd <url,...>) [--token-file <f>] [--tls-ca <f>] [--json]',
  options: {
    peers: { type: 'string' },
    etcd: { type: 'string' },
    'token-file': { type: 'string' },
    'tls-ca': { type: 'string' },
  },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    const host = positionals[0]!;
    parseAddress(host);
    const members = await clusterMembers(values);
    const peers = await members.list().finally(() => members.close());
    const result = await drainHost({
      host,
      peers,
      token: agentToken(values['token-file']),
      ca: readCa(values['tls-ca']),
      onMove: (e) => {
        if (!values.json)
          process.stdout.write(`${describeEvent({ ...e, event: 'outcome', at: e.endedAt ?? e.at })}\n`);
      },
    });
    if (values.json) printJson(result);
    else
      process.stdout.write(
        result.left.length === 0
          ? `${host} is drained: ${result.moved.length} job(s) moved, none left\n`
          : `${host} is drained, but ${result.left.length} job(s) run on there: ${result.left.map((j) => `${j.name} (${j.why})`).join(', ')}\n`,
      );
    return result.left.length === 0 ? 0 : 1;
  },
};

export const undrainCommand: Command = {
  name: 'undrain',
  summary: 'let a drained agent take jobs again',
  usage: 'ferry undrain <host:port> [--token-file <f>] [--tls-ca <f>] [--json]',
  options: { 'token-file': { type: 'string' }, 'tls-ca': { type: 'string' } },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    const host = positionals[0]!;
    const answer = await callAgent<{ drained: boolean }>(
      endpointOf(host, agentToken(values['token-file']), readCa(values['tls-ca'])),
      'POST',
      '/v1/undrain',
      {},
      10_000,
    );
    printResult(values.json, { host, ...answer }, () => `${host} takes jobs again`);
    return 0;
  },
};
