// ferry untrack <pid> [--json]
import { untrack, type Untracked } from '../untrack.js';
import { parsePid, printResult, type Command } from './command.js';

function summary(r: Untracked): string {
  if (r.fd === null) return `process ${r.pid} holds no dirty-page tracker of ferry's`;
  const since = r.image ? ` (tracking since ${r.image})` : '';
  return `process ${r.pid}: released ferry's dirty-page tracker, descriptor ${r.fd}${since}`;
}

export const untrackCommand: Command = {
  name: 'untrack',
  summary: 'release the dirty-page tracker a dump --track-mem left in a process',
  usage: 'ferry untrack <pid> [--json]',
  options: {},
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    printResult(values.json, await untrack(parsePid(positionals[0])), summary);
    return 0;
  },
};
