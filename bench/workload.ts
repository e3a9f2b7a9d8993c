// What the benchmarks share: CRIU's presence, C fixture workloads started with stdout on a file,
// and wall-clock timing.
import {
  closeSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { callAgent, type AgentEndpoint } from '../src/migrate/client.js';
import { fixture } from '../test/helpers/fixtures.js';
import { CLI } from '../test/helpers/paths.js';
import { startProcess } from '../test/helpers/processes.js';

// Node.js reads every certificate named by NODE_EXTRA_CA_CERTS when it starts, before any of
// ferry's code runs (50 ms on this project's machines, which set it to the system's whole bundle):
// ferry's commands never use it, so the benchmarks run them without it, as on most hosts.
delete process.env.NODE_EXTRA_CA_CERTS;

/** CRIU's version when `criu` >= 4.1 is on PATH, else null. */
export function criuVersion(): string | null {
  const r = spawnSync('criu', ['--version'], { encoding: 'utf8' });
  const m = /Version: (\d+)\.(\d+)/.exec(r.stdout ?? '');
  if (!m) return null;
  return Number(m[1]) > 4 || (Number(m[1]) === 4 && Number(m[2]) >= 1) ? `${m[1]}.${m[2]}` : null;
}

export function dirBytes(dir: string): number {
  let total = 0;
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) total += statSync(join(entry.parentPath, entry.name)).size;
  }
  return total;
}

export interface Workload {
  pid: number;
  /** Where its stdout goes. */
  out: string;
  exited: Promise<void>;
}

/**
 * Start C fixture `name` with stdout on a file in `work` (not a pipe, which no checkpoint takes)
 * and wait until it says READY.
 */
export async function startWorkload(work: string, name: string, args: string[]): Promise<Workload> {
  const out = join(work, 'workload.out');
  const fd = openSync(out, 'w');
  const child = spawn(fixture(name), args, { stdio: ['ignore', fd, 'ignore'], detached: true });
  closeSync(fd);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  for (;;) {
    if (readFileSync(out, 'utf8').startsWith('READY')) return { pid: child.pid!, out, exited };
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function time<T>(fn: () => T): [T, number] {
  const t0 = performance.now();
  const result = fn();
  return [result, performance.now() - t0];
}

export interface DumpFlags {
  leaveRunning?: boolean;
  /** ferry only: zstd page data. */
  compress?: boolean;
}

/** `ferry dump --json` of `pid` into `image`: its own frozen time. */
export function ferryDump(pid: number, image: string, flags: DumpFlags = {}): { frozenMs: number } {
  const args = ['dump', String(pid), '-D', image, '--json'];
  if (flags.leaveRunning) args.push('--leave-running');
  if (flags.compress) args.push('--compress');
  return JSON.parse(execFileSync(CLI, args, { encoding: 'utf8' })) as { frozenMs: number };
}

/** `ferry restore --json` of `image`: the new PID and ferry's own restore time. */
export function ferryRestore(image: string): { pid: number; restoreMs: number } {
  const out = execFileSync(CLI, ['restore', '-D', image, '--json'], { encoding: 'utf8' });
  return JSON.parse(out) as { pid: number; restoreMs: number };
}

/** `criu dump` of `pid` (and its tree) into `image`: the frozen time CRIU reports. */
export function criuDump(pid: number, image: string, flags: DumpFlags = {}): { frozenMs: number } {
  const args = ['dump', '-t', String(pid), '-D', image, '-o', 'dump.log', '--display-stats'];
  if (flags.leaveRunning) args.push('--leave-running');
  const out = execFileSync('criu', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const us = /Frozen time: (\d+) us/.exec(out);
  if (!us) throw new Error(`criu dump printed no frozen time:\n${out}`);
  return { frozenMs: Number(us[1]) / 1000 };
}

/** `criu restore -d` of `image`: the process runs under its old PID, CRIU detached. */
export function criuRestore(image: string): void {
  execFileSync('criu', ['restore', '-D', image, '-d', '-o', 'restore.log'], { stdio: 'ignore' });
}

/** A ferry agent on loopback for a benchmark: where to reach it, its data directory, stop(). */
export interface BenchAgent {
  endpoint: AgentEndpoint;
  dataDir: string;
  tokenFile: string;
  stop(): Promise<void>;
}

/** An agent on a loopback port the kernel gives out. */
export async function startBenchAgent(): Promise<BenchAgent> {
  const work = mkdtempSync(join(tmpdir(), 'ferry-bench-agent-'));
  const token = 'bench-token-0123456789abcdef';
  const tokenFile = join(work, 'token');
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const dataDir = join(work, 'data');
  const agent = await startProcess(CLI, [
    ...['agent', '--listen', '127.0.0.1:0', '--data-dir', dataDir],
    ...['--token-file', tokenFile],
  ]);
  const port = Number(/listening on 127\.0\.0\.1:(\d+) /.exec(agent.readyLine)?.[1]);
  if (!(port > 0)) throw new Error(`the agent said: ${agent.readyLine}`);
  return {
    endpoint: { host: '127.0.0.1', port, token },
    dataDir,
    tokenFile,
    async stop() {
      await agent.stop();
      rmSync(work, { recursive: true, force: true });
    },
  };
}

const AGENT_TIMEOUT_MS = 120_000;

/** POST /v1/dump to a running agent: its own frozen time; the image is `<data-dir>/images/<name>`. */
export function agentDump(
  agent: BenchAgent,
  pid: number,
  name: string,
  flags: DumpFlags = {},
): Promise<{ frozenMs: number }> {
  const body = { pid, image: name, leaveRunning: flags.leaveRunning, compress: flags.compress };
  return callAgent(agent.endpoint, 'POST', '/v1/dump', body, AGENT_TIMEOUT_MS);
}

/** POST /v1/restore to a running agent: the new PID and the agent's own restore time. */
export function agentRestore(agent: BenchAgent, name: string): Promise<{ pid: number; restoreMs: number }> {
  return callAgent(agent.endpoint, 'POST', '/v1/restore', { image: name }, AGENT_TIMEOUT_MS);
}

/** How long `fn` takes to settle, and what it gives. */
export async function timeAsync<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const result = await fn();
  return [result, performance.now() - t0];
}
