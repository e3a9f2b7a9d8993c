// ferry guard: started by ferry itself (src/guardian.ts), not by hand.
import { guard } from '../guardian.js';
import type { Command } from './command.js';

export const guardCommand: Command = {
  name: 'guard',
  summary: '(started by ferry itself) undo what a ferry that died left in the processes it held',
  usage: 'ferry guard < <what ferry tells it>',
  options: {},
  positionals: { min: 0, max: 0 },
  async run() {
    // Its ferry's end, not a signal, ends it: a Ctrl-C for ferry must not take its guardian along.
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => {});
    await guard(process.stdin, (line) => process.stderr.write(`ferry guard: ${line}\n`));
    return 0;
  },
};
