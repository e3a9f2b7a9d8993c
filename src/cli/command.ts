// What every CLI command declares: its name, usage, options, and a run() over parsed arguments.
import type { ParseArgsConfig } from 'node:util';
import { readFileSync } from 'node:fs';
import { readTokenFile } from '../agent/auth.js';
import { FerryError } from '../errors.js';

export type OptionSpec = NonNullable<ParseArgsConfig['options']>;

export interface ParsedArgs {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
}

export interface Command {
  name: string;
  summary: string;
  /** One line per form, e.g. `ferry inspect <pid> [--json] [--vmas <spec>]`. */
  usage: string;
  options: OptionSpec;
  /** How many positional arguments it takes. */
  positionals: { min: number; max: number };
  /** Returns the exit code. */
  run(args: ParsedArgs): Promise<number> | number;
}

/** How this CLI process started: from ferry's startup snapshot (src/cli/snapshot.ts) or not. */
export const startup = { fromSnapshot: false };

/** Print a value as JSON on stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A command's result: as JSON with --json, else as its one-line summary. */
export function printResult<T>(json: unknown, result: T, summary: (result: T) => string): void {
  if (json) printJson(result);
  else process.stdout.write(`${summary(result)}\n`);
}

/** Options every command accepts. */
export const COMMON_OPTIONS: OptionSpec = {
  json: { type: 'boolean' },
  debug: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
};

export function parsePid(text: string | undefined): number {
  if (text === undefined || !/^\d+$/.test(text) || Number(text) <= 0 || Number(text) > 2 ** 22) {
    throw new FerryError('FERRY_USAGE', `not a PID: ${JSON.stringify(text ?? '')}`);
  }
  return Number(text);
}

/** A positive number of milliseconds from option `name`, or undefined when not given. */
export function parseMs(name: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const ms = Number(value);
  if (typeof value !== 'string' || !Number.isInteger(ms) || ms <= 0)
    throw new FerryError('FERRY_USAGE', `--${name} takes a positive number of milliseconds`);
  return ms;
}

/** The items of a comma-separated option (`a,b,c`), or `usage` as the error when it has none. */
export function parseList(value: unknown, usage: string): string[] {
  const items =
    typeof value === 'string'
      ? value
          .split(',')
          .map((v) => v.trim())
          .filter(Boolean)
      : [];
  if (items.length === 0) throw new FerryError('FERRY_USAGE', usage);
  return items;
}

/** Milliseconds from `500ms`, `30s`, `5m`, `1h` or a number of seconds (option `name`). */
export function parseDuration(name: string, value: string): number {
  const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value);
  const ms = m ? Number(m[1]) * UNITS[m[2] ?? 's']! : NaN;
  if (!(ms >= 1)) throw new FerryError('FERRY_USAGE', `--${name} takes a duration such as 500ms, 30s or 5m`);
  return ms;
}

export function requireDir(value: unknown): string {
  if (typeof value !== 'string' || value === '')
    throw new FerryError('FERRY_USAGE', 'an image directory is required: -D <dir>');
  return value;
}

export function warnOnStderr(message: string): void {
  process.stderr.write(`ferry: warning: ${message}\n`);
}

export const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Run `work` with SIGINT, SIGTERM and SIGHUP turned into an abort of its `signal`: it stops at its
 * next step and undoes what it began (a frozen process runs on as it was) rather than dying there.
 * A second signal does not hurry it.
 */
export async function interruptible<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const onSignal = (name: NodeJS.Signals): void => {
    if (controller.signal.aborted) return;
    process.stderr.write(
      `ferry: ${name}: stopping at the next step (what is under way is let go as it was)\n`,
    );
    controller.abort(new FerryError('FERRY_INTERRUPTED', `interrupted by ${name}`));
  };
  for (const name of STOP_SIGNALS) process.on(name, onSignal);
  try {
    return await work(controller.signal);
  } finally {
    for (const name of STOP_SIGNALS) process.off(name, onSignal);
  }
}

/** The token to give an agent: the first of `file` (--token-file), else $FERRY_TOKEN. */
export function agentToken(file: unknown): string | undefined {
  if (typeof file === 'string') return readTokenFile(file)[0]!.token.toString();
  return process.env.FERRY_TOKEN;
}

/** The CA certificate (PEM) of --tls-ca, if given. */
export function readCa(file: unknown): Buffer | undefined {
  if (typeof file !== 'string') return undefined;
  try {
    return readFileSync(file);
  } catch (err) {
    throw new FerryError('FERRY_USAGE', `cannot read ${file}: ${String(err)}`);
  }
}
