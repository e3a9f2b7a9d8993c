// Run the ferry executable as a user would, and capture what it says.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { CLI } from './paths.js';
import { killAndReap } from './reaper.js';

export interface CliResult {
  code: number | null;
  /** The signal that ended ferry, if one did. */
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function runCli(
  args: string[],
  options: { wrap?: string[]; env?: Record<string, string>; onStart?: (pid: number) => void } = {},
): Promise<CliResult> {
  const [cmd, ...pre] = [...(options.wrap ?? []), CLI];
  return new Promise((resolve, reject) => {
    const env = options.env && { ...process.env, ...options.env };
    const child = spawn(cmd, [...pre, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    if (child.pid !== undefined) options.onStart?.(child.pid);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** Run ferry, insisting that it succeeds; what it printed. */
export async function cliOk(args: string[]): Promise<string> {
  const r = await runCli(args);
  assert.equal(r.code, 0, `ferry ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** `ferry restore -D <image> ...`: the restored PID, which `cleanup` kills. */
export async function restoreCli(
  image: string,
  cleanup: (step: () => void) => void,
  ...extra: string[]
): Promise<number> {
  const pid = Number((await cliOk(['restore', '-D', image, ...extra])).trim());
  assert.ok(pid > 0);
  cleanup(() => killAndReap(pid));
  return pid;
}
