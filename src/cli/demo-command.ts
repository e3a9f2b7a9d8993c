// ferry demo [--json]
// ferry demo cluster [--http <addr:port>] [--json]
import { demo } from '../demo.js';
import { FerryError } from '../errors.js';
import { printJson, type Command } from './command.js';

export const demoCommand: Command = {
  name: 'demo',
  summary:
    'checkpoint, kill and restore a small built-in workload; `demo cluster`: balance jobs across three local agents',
  usage: 'ferry demo [--json]\n       ferry demo cluster [--http <addr:port>] [--json]',
  options: { http: { type: 'string' } },
  positionals: { min: 0, max: 1 },
  async run({ values, positionals }) {
    // Loaded only for it: it needs node:http, which the startup snapshot cannot hold.
    if (positionals[0] === 'cluster')
      return (await import('./demo-cluster.js')).demoCluster(
        values.json === true,
        typeof values.http === 'string' ? values.http : undefined,
      );
    if (values.http !== undefined)
      throw new FerryError('FERRY_USAGE', '--http serves the dashboard of `ferry demo cluster`');
    if (positionals[0] !== undefined)
      throw new FerryError(
        'FERRY_USAGE',
        `unknown demo "${positionals[0]}" (ferry demo, or ferry demo cluster)`,
      );
    const result = await demo(values.json ? undefined : (line) => process.stdout.write(`${line}\n`));
    if (values.json) printJson(result);
    return result.passed ? 0 : 1;
  },
};
