import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, rmSync, symlinkSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { after, before, test } from 'node:test';
import { execFileSync } from 'node:child_process';
import { dirname } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { CLI, CLI_BUNDLE } from '../helpers/paths.js';
import { fixture } from '../helpers/fixtures.js';
import {
  kernelThread,
  startOtherUserProcess,
  startProcess,
  WITHOUT_TRACE_CAPS,
  type Started,
} from '../helpers/processes.js';

let scratch: string;
let target: Started;

before(async () => {
  scratch = mkdtempSync(`${tmpdir()}/ferry-cli-`);
  target = await startProcess(fixture('vmas'), [scratch]);
});

after(async () => {
  await target.stop();
  rmSync(scratch, { recursive: true, force: true });
});

test('--help lists every command; --version prints the version', async () => {
  const help = await runCli(['--help']);
  assert.equal(help.code, 0);
  for (const c of ['check', 'inspect']) assert.match(help.stdout, new RegExp(`^  ${c} `, 'm'));
  const version = await runCli(['--version']);
  assert.match(version.stdout, /^\d+\.\d+\.\d+\n$/);
  const commandHelp = await runCli(['inspect', '--help']);
  assert.match(commandHelp.stdout, /^usage: ferry inspect <pid>/);
});

/** How `command check --json` says the CLI started. */
function startupOf(command: string, ...args: string[]): string {
  // check exits 1 on a host missing a required feature; its report is what matters here.
  const out = execFileSync(command, [...args, 'check', '--json'], { encoding: 'utf8' });
  return (JSON.parse(out) as { cliStartup: string }).cliStartup;
}

test('the ferry command starts from its startup snapshot, and from the bundle once its Node changed', () => {
  assert.equal(startupOf(CLI), 'snapshot');
  const link = `${scratch}/ferry`;
  symlinkSync(CLI, link); // as npm links it
  assert.equal(startupOf(link), 'snapshot');
  assert.equal(startupOf(process.execPath, CLI_BUNDLE), 'bundle');
  // A copy as deep in dist/ (the bundle's chunks find package.json the same way) whose stamp no
  // longer matches the Node that made the snapshot: it runs the bundle.
  const copy = `${dirname(dirname(CLI))}/bin-stale-${process.pid}`;
  try {
    cpSync(dirname(CLI), copy, { recursive: true, preserveTimestamps: true });
    assert.equal(startupOf(`${copy}/ferry`), 'snapshot');
    utimesSync(`${copy}/ferry.blob.node`, new Date(), new Date());
    assert.equal(startupOf(`${copy}/ferry`), 'bundle');
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
});

test('dump and restore start from snapshots of their own: help and usage errors as the others', async () => {
  for (const name of ['dump', 'restore']) {
    assert.ok(existsSync(`${dirname(CLI)}/ferry-${name}.blob`), `ferry-${name}.blob`);
    const help = await runCli([name, '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, new RegExp(`^usage: ferry ${name} `));
    const wrong = await runCli([name, '--bogus']);
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /^ferry: Unknown option '--bogus'/);
    assert.doesNotMatch(wrong.stderr, /\n\s+at /, 'no stack trace');
  }
});

test('usage errors: one line, exit 2, no stack trace', async () => {
  for (const args of [
    ['frobnicate'],
    ['inspect'],
    ['inspect', 'abc'],
    ['inspect', '1', '--bogus'],
    ['inspect', '1', '--scan', 'x'],
  ]) {
    const r = await runCli(args);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr, /^ferry: /);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

test('inspect: a table on stdout', async () => {
  const r = await runCli(['inspect', String(target.pid)]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stdout,
    /^START\s+END\s+SIZE\s+PERM\s+OFFSET\s+KIND\s+RSS\s+SWAP\s+ANON\s+FILE\s+HUGE\s+DUMP\s+NAME$/m,
  );
  assert.match(r.stdout, /64\.0 MiB\s+rw-p\s+0\s+anon\s+8192\s+0\s+8192\s+0\s+0\s+8192\s*$/m);
  assert.match(r.stdout, /a checkpoint would write \d+ pages/);
});

test('inspect --json follows the schema in docs/inspect.schema.json', async () => {
  const r = await runCli(['inspect', String(target.pid), '--json', '--vmas', 'heap,stack']);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as {
    version: number;
    vmas: { kind: string; start: string; pages: { dump: number } }[];
    selection: string;
  };
  assert.equal(out.version, 1);
  assert.equal(out.selection, 'heap,stack');
  assert.deepEqual([...new Set(out.vmas.map((v) => v.kind))].sort(), ['heap', 'stack']);
  assert.match(out.vmas[0]!.start, /^0x[0-9a-f]+$/);
  const { validateAgainstSchema } = await import('../helpers/schema.js');
  validateAgainstSchema('inspect.schema.json', out);
});

test('errors: one line each, exit 1, and JSON errors with --json', async () => {
  const kthread = kernelThread();
  const cases: [string[], RegExp][] = [
    [['inspect', '4194304'], /no process with PID 4194304/],
    ...(kthread === undefined ? [] : [[['inspect', String(kthread)], /kernel thread/] as [string[], RegExp]]),
    [['inspect', String(target.pid), '--vmas', 'heap,bogus'], /bad VMA selection term "bogus"/],
  ];
  for (const [args, message] of cases) {
    const r = await runCli(args);
    assert.equal(r.code, 1, args.join(' '));
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  const parent = await startProcess('/usr/bin/python3', [
    '-c',
    'import os,sys\npid = os.fork()\nif pid == 0: os._exit(0)\nprint(pid, flush=True)\nsys.stdin.read()',
  ]);
  try {
    const zombie = await runCli(['inspect', parent.readyLine]);
    assert.equal(zombie.code, 1);
    assert.match(
      zombie.stderr,
      /^ferry: process \d+ \(python3\) is a zombie: it has exited and holds no memory\n$/,
    );
  } finally {
    await parent.stop();
  }
  const json = await runCli(['inspect', '4194304', '--json']);
  assert.equal(json.code, 1);
  assert.deepEqual(JSON.parse(json.stdout), {
    error: {
      code: 'FERRY_NO_SUCH_PROCESS',
      message: 'no process with PID 4194304 (reading /proc/4194304/stat)',
    },
  });
});

test("no permission: root without CAP_SYS_PTRACE inspecting another user's process", async () => {
  const other = await startOtherUserProcess();
  try {
    const r = await runCli(['inspect', String(other.pid)], {
      wrap: WITHOUT_TRACE_CAPS,
    });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stderr,
      /^ferry: no permission to read \/proc\/\d+\/smaps: run ferry as root or with CAP_SYS_PTRACE\n$/,
    );
  } finally {
    await other.stop();
  }
});
