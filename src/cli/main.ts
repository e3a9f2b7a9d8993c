// The ferry command line: a thin layer over the library. Errors become one line and an exit code;
// a stack trace only with --debug.
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { FerryError } from '../errors.js';
import { COMMON_OPTIONS, printJson, type Command } from './command.js';
import { FERRY_VERSION } from '../version.js';

/**
 * Every command, in the order `ferry --help` lists them. A command's module is loaded only when it
 * runs: each pulls in its part of the library, and loading all of it would slow every start.
 */
const COMMANDS: readonly { name: string; load: () => Promise<Command> }[] = [
  { name: 'demo', load: async () => (await import('./demo-command.js')).demoCommand },
  { name: 'check', load: async () => (await import('./check-command.js')).checkCommand },
  { name: 'inspect', load: async () => (await import('./inspect-command.js')).inspectCommand },
  { name: 'dump', load: async () => (await import('./dump-command.js')).dumpCommand },
  { name: 'restore', load: async () => (await import('./restore-command.js')).restoreCommand },
  { name: 'show', load: async () => (await import('./show-command.js')).showCommand },
  { name: 'migrate', load: async () => (await import('./migrate-command.js')).migrateCommand },
  { name: 'agent', load: async () => (await import('./agent-command.js')).agentCommand },
];

/**
 * Commands that freeze a process, or hold one for a migration: their code is compiled as it loads
 * (the startup snapshot holds the others' compiled).
 */
const FREEZERS = new Set(['dump', 'migrate', 'agent']);

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

async function help(): Promise<string> {
  const commands = await Promise.all(COMMANDS.map((c) => c.load()));
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    'ferry: checkpoint, restore and migrate running Linux processes, VMA by VMA',
    '',
    'usage: ferry <command> [options]',
    '',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
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
    process.stdout.write(`${target ? commandHelp(await target.load()) : await help()}\n`);
    return 0;
  }
  if (name === '--version') {
    process.stdout.write(`${FERRY_VERSION}\n`);
    return 0;
  }
  const entry = COMMANDS.find((c) => c.name === name);
  if (!entry) throw new FerryError('FERRY_USAGE', `unknown command "${name}" (see ferry --help)`);
  if (FREEZERS.has(name)) {
    // What a dump runs while the process is frozen is compiled now, before: compiled lazily, at
    // first call, it cost 8-10 ms of a small dump's 20 (and no more time in all).
    setFlagsFromString('--no-lazy');
    // The process is ferry's own: a dump after pre-copy rounds may collect garbage just before it
    // freezes (checkpoint.ts).
    setFlagsFromString('--expose-gc');
    globalThis.gc ??= runInNewContext('gc') as NodeJS.GCFunction;
  }
  const command = await entry.load();
  setFlagsFromString('--lazy');
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

/**
 * Commands whose modules the startup snapshot holds loaded: all but those that need node:http,
 * which Node cannot put in a snapshot (they load as they run).
 */
const SNAPSHOT_COMMANDS = new Set(['demo', 'check', 'inspect', 'dump', 'restore', 'show']);

/** Load the modules of the commands the startup snapshot holds. */
export async function loadSnapshotCommands(): Promise<void> {
  await Promise.all(COMMANDS.filter((c) => SNAPSHOT_COMMANDS.has(c.name)).map((c) => c.load()));
}

/** Run the command line `argv` (without node and script); the exit code lands in process.exitCode. */
export function runCli(argv: string[]): void {
  // A reader that goes away (`ferry inspect 1 | head`) ends the output, not in a stack trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit(process.exitCode ?? 0);
  });
  main(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.exitCode = report(err, argv);
    },
  );
}
