// ferry demo [--json]
import { demo } from '../demo.js';
import { printJson, type Command } from './command.js';

export const demoCommand: Command = {
  name: 'demo',
  summary: 'checkpoint, kill and restore a small built-in workload, and check it carried on',
  usage: 'ferry demo [--json]',
  options: {},
  positionals: { min: 0, max: 0 },
  async run({ values }) {
    const result = await demo(values.json ? undefined : (line) => process.stdout.write(`${line}\n`));
    if (values.json) printJson(result);
    return result.passed ? 0 : 1;
  },
};
