// ferry restore -D <dir> [--pidfile <file>] [--same-pid require|try|no] [--tty inherit|null] [--stopped]
//   [--lazy] [--inherit-fd fd[N]:KEY ...] [--json]
import { fstatSync, writeFileSync } from 'node:fs';
import { FerryError } from '../errors.js';
import type { LazyTotals } from '../memory/lazy.js';
import { restore } from '../restore.js';
import {
  interruptible,
  printJson,
  printResult,
  requireDir,
  STOP_SIGNALS,
  warnOnStderr,
  type Command,
} from './command.js';

function choice<T extends string>(name: string, value: unknown, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new FerryError('FERRY_USAGE', `--${name} must be one of ${allowed.join(', ')}`);
  }
  return value as T;
}

/**
 * `--inherit-fd fd[N]:KEY`, as often as needed: descriptor N of this command (open when it was
 * started: `3>/var/log/job.out`) given to the restored process in place of its external KEY.
 */
function inheritFds(specs: unknown): Map<string, number> {
  const out = new Map<string, number>();
  for (const spec of (specs as string[] | undefined) ?? []) {
    const m = /^fd\[(\d+)\]:(\S+)$/.exec(spec);
    if (!m)
      throw new FerryError('FERRY_USAGE', `--inherit-fd ${spec}: expected fd[N]:KEY, e.g. fd[3]:pipe:[4242]`);
    const fd = Number(m[1]);
    try {
      fstatSync(fd);
    } catch {
      throw new FerryError(
        'FERRY_USAGE',
        `--inherit-fd ${spec}: descriptor ${fd} is not open in this command`,
      );
    }
    out.set(m[2]!, fd);
  }
  return out;
}

/**
 * Wait for a lazy restore's pages: the process dies with ferry until they are all in, so a stop
 * signal meanwhile is said and put off until then.
 */
async function allIn(pid: number, done: Promise<LazyTotals>): Promise<LazyTotals> {
  const onSignal = (name: NodeJS.Signals): void => {
    process.stderr.write(
      `ferry: ${name}: process ${pid} needs the pages still to come: ferry exits once they are in\n`,
    );
  };
  for (const name of STOP_SIGNALS) process.on(name, onSignal);
  try {
    return await done;
  } finally {
    for (const name of STOP_SIGNALS) process.off(name, onSignal);
  }
}

export const restoreCommand: Command = {
  name: 'restore',
  summary: 'bring a process back from an image; prints its PID',
  usage:
    'ferry restore -D <dir> [--pidfile <file>] [--same-pid require|try|no] [--tty inherit|null] [--stopped] [--lazy] [--inherit-fd fd[N]:KEY ...] [--json]',
  options: {
    dir: { type: 'string', short: 'D' },
    pidfile: { type: 'string' },
    'same-pid': { type: 'string' },
    tty: { type: 'string' },
    stopped: { type: 'boolean' },
    lazy: { type: 'boolean' },
    'inherit-fd': { type: 'string', multiple: true },
  },
  positionals: { min: 0, max: 0 },
  async run({ values }) {
    const dir = requireDir(values.dir);
    const result = await interruptible((signal) =>
      restore(dir, {
        samePid: choice('same-pid', values['same-pid'], ['require', 'try', 'no'] as const, 'try'),
        tty: choice('tty', values.tty, ['inherit', 'null'] as const, 'inherit'),
        leaveStopped: values.stopped === true,
        lazy: values.lazy === true,
        inheritFds: inheritFds(values['inherit-fd']),
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
    const { lazy, ...restored } = result;
    if (!lazy) {
      printResult(values.json, restored, (r) => String(r.pid));
      return 0;
    }
    // The PID at once (the process runs); the rest once every page is in.
    if (!values.json) {
      process.stdout.write(`${result.pid}\n`);
      process.stderr.write(`ferry: process ${result.pid} runs; ${lazy.pages} pages come in as it goes\n`);
    }
    const totals = await allIn(result.pid, lazy.done);
    if (values.json) printJson({ ...restored, lazy: { pages: lazy.pages, ...totals } });
    else
      process.stderr.write(
        `ferry: all ${lazy.pages} pages in after ${Math.round(totals.ms)} ms: ${totals.faults} faults answered from the image, ` +
          `${totals.zeroFaults} with zeros, ${totals.filledPages} pages copied in the background\n`,
      );
    return 0;
  },
};
