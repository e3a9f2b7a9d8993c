// ferry restore -D <dir> [--pidfile <file>] [--same-pid require|try|no] [--tty inherit|null] [--stopped] [--json]
import { writeFileSync } from 'node:fs';
import { FerryError } from '../errors.js';
import { restore } from '../restore.js';
import { interruptible, printResult, requireDir, warnOnStderr, type Command } from './command.js';

function choice<T extends string>(name: string, value: unknown, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new FerryError('FERRY_USAGE', `--${name} must be one of ${allowed.join(', ')}`);
  }
  return value as T;
}

export const restoreCommand: Command = {
  name: 'restore',
  summary: 'bring a process back from an image; prints its PID',
  usage:
    'ferry restore -D <dir> [--pidfile <file>] [--same-pid require|try|no] [--tty inherit|null] [--stopped] [--json]',
  options: {
    dir: { type: 'string', short: 'D' },
    pidfile: { type: 'string' },
    'same-pid': { type: 'string' },
    tty: { type: 'string' },
    stopped: { type: 'boolean' },
  },
  positionals: { min: 0, max: 0 },
  async run({ values }) {
    const dir = requireDir(values.dir);
    const result = await interruptible((signal) =>
      restore(dir, {
        samePid: choice('same-pid', values['same-pid'], ['require', 'try', 'no'] as const, 'try'),
        tty: choice('tty', values.tty, ['inherit', 'null'] as const, 'inherit'),
        leaveStopped: values.stopped === true,
        onWarning: values.json ? undefined : warnOnStderr,
        signal,
      }),
    );
    if (typeof values.pidfile === 'string') {
      try {
        writeFileSync(values.pidfile, `${result.pid}\n`);
      } catch (err) {
        throw new FerryError(
          'FERRY_USAGE',
          `restored as PID ${result.pid}, but cannot write ${values.pidfile}: ${String(err)}`,
        );
      }
    }
    printResult(values.json, result, (r) => String(r.pid));
    return 0;
  },
};
