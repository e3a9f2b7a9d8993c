// ferry resolve <pid> --migration <id> --to <host:port> [--token-file <f>] [--tls-ca <f>] [--timeout <ms>] [--json]
import { FerryError } from '../errors.js';
import { parseAddress } from '../migrate/client.js';
import { resolveInDoubt, type Resolution } from '../migrate/resolve.js';
import { agentToken, parseMs, parsePid, printResult, readCa, type Command } from './command.js';

const DEFAULT_TIMEOUT_MS = 30_000;

function summary(r: Resolution): string {
  return r.outcome === 'moved'
    ? `migration ${r.migrationId}: the process runs on the target; killed process ${r.pid} here`
    : `migration ${r.migrationId}: the target did not run it; process ${r.pid} runs on here`;
}

export const resolveCommand: Command = {
  name: 'resolve',
  summary: 'settle a migration left in doubt: ask the target, then kill or continue the stopped source',
  usage:
    'ferry resolve <pid> --migration <id> --to <host:port> [--token-file <f>] [--tls-ca <f>] [--timeout <ms>] [--json]',
  options: {
    migration: { type: 'string' },
    to: { type: 'string' },
    'token-file': { type: 'string' },
    'tls-ca': { type: 'string' },
    timeout: { type: 'string' },
  },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    const pid = parsePid(positionals[0]);
    if (typeof values.migration !== 'string' || typeof values.to !== 'string')
      throw new FerryError(
        'FERRY_USAGE',
        'give the migration and its target: --migration <id> --to <host:port>',
      );
    const to = {
      ...parseAddress(values.to),
      token: agentToken(values['token-file']),
      ca: readCa(values['tls-ca']),
    };
    const result = await resolveInDoubt(pid, values.migration, to, {
      timeoutMs: parseMs('timeout', values.timeout) ?? DEFAULT_TIMEOUT_MS,
    });
    printResult(values.json, result, summary);
    return 0;
  },
};
