#!/usr/bin/env node
// The ferry command line: a thin layer over the library. Errors become one line and an exit code;
// a stack trace only with --debug.
import { parseArgs } from 'node:util';
import { FerryError } from '../errors.js';
import { agentCommand } from './agent-command.js';
import { checkCommand } from './check-command.js';
import { COMMON_OPTIONS, printJson, type Command } from './command.js';
import { demoCommand } from './demo-command.js';
import { dumpCommand } from './dump-command.js';
import { inspectCommand } from './inspect-command.js';
import { migrateCommand } from './migrate-command.js';
import { restoreCommand } from './restore-command.js';
import { showCommand } from './show-command.js';
import { FERRY_VERSION } from '../version.js';

/** Every command, in the order `ferry --help` lists them. */
const COMMANDS: readonly Command[] = [
  demoCommand,
  checkCommand,
  inspectCommand,
  dumpCommand,
  restoreCommand,
  showCommand,
  migrateCommand,
  agentCommand,
];

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

function help(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'ferry: checkpoint, restore and migrate running Linux processes, VMA by VMA',
    '',
    'usage: ferry <command> [options]',
    '',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Every command takes --json (machine-readable output), --debug (stack traces) and --help.',
  ].join('\n');
}

function commandHelp(c: Command): string {
  return `usage: ${c.usage}\n\n${c.summary}`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const target = COMMANDS.find((c) => c.name === rest[0]);
    process.stdout.write(`${target ? commandHelp(target) : help()}\n`);
    return 0;
  }
  if (name === '--version') {
    process.stdout.write(`${FERRY_VERSION}\n`);
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) throw new FerryError('FERRY_USAGE', `unknown command "${name}" (see ferry --help)`);
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: { ...COMMON_OPTIONS, ...command.options },
      allowPositionals: true,
    });
  } catch (err) {
    throw new FerryError('FERRY_USAGE', `${(err as Error).message}\nusage: ${command.usage}`);
  }
  if (parsed.values.help) {
    process.stdout.write(`${commandHelp(command)}\n`);
    return 0;
  }
  const n = parsed.positionals.length;
  if (n < command.positionals.min || n > command.positionals.max) {
    throw new FerryError('FERRY_USAGE', `wrong number of arguments\nusage: ${command.usage}`);
  }
  return command.run(parsed);
}

function report(err: unknown, argv: string[]): number {
  const debug = argv.includes('--debug');
  const code = err instanceof FerryError ? err.code : 'FERRY_INTERNAL';
  const message = err instanceof Error ? err.message : String(err);
  if (argv.includes('--json')) printJson({ error: { code, message } });
  else process.stderr.write(`ferry: ${message}${err instanceof FerryError ? '' : ` [${code}]`}\n`);
  if (debug && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  else if (!(err instanceof FerryError))
    process.stderr.write('ferry: this is a bug; run with --debug for details\n');
  return code === 'FERRY_USAGE' ? EXIT_USAGE : EXIT_FAILURE;
}

// A reader that goes away (`ferry inspect 1 | head`) ends the output, not in a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
  process.exit(process.exitCode ?? 0);
});

const argv = process.argv.slice(2);
main(argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.exitCode = report(err, argv);
  },
);
