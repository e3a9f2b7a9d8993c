// ferry run --agent <host:port> [--token-file <f>] [--tls-ca <f>] [--name <name>] [--stdout <f>] [--stderr <f>]
//   [--no-migrate] [--json] -- <cmd> [args...]
import { resolve } from 'node:path';
import { FerryError } from '../errors.js';
import { callAgent, parseAddress } from '../migrate/client.js';
import { agentToken, printResult, readCa, type Command } from './command.js';

interface Started {
  id: string;
  name: string;
  pid: number;
  agent: string;
}

export const runJobCommand: Command = {
  name: 'run',
  summary: 'start a job under an agent, which the balancer may move to another host',
  usage:
    'ferry run --agent <host:port> [--token-file <f>] [--tls-ca <f>] [--name <name>] [--stdout <f>] [--stderr <f>]\n' +
    '       [--no-migrate] [--json] -- <cmd> [args...]',
  options: {
    agent: { type: 'string' },
    'token-file': { type: 'string' },
    'tls-ca': { type: 'string' },
    name: { type: 'string' },
    stdout: { type: 'string' },
    stderr: { type: 'string' },
    'no-migrate': { type: 'boolean' },
  },
  positionals: { min: 1, max: Infinity },
  async run({ values, positionals }) {
    if (typeof values.agent !== 'string')
      throw new FerryError('FERRY_USAGE', 'give the agent to run the job under: --agent <host:port>');
    const file = (name: 'stdout' | 'stderr'): string | undefined =>
      typeof values[name] === 'string' ? resolve(values[name]) : undefined;
    const endpoint = {
      ...parseAddress(values.agent),
      token: agentToken(values['token-file']),
      ca: readCa(values['tls-ca']),
    };
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
      },
      30_000,
    );
    printResult(
      values.json,
      started,
      (s) => `started job ${s.id} (${s.name}) as pid ${s.pid} on ${values.agent as string}`,
    );
    return 0;
  },
};
