// Agents on loopback for the cluster tests, each confining its jobs to a CPU quota of a cgroup of
// its own (or none): started through /usr/bin/env (for FERRY_FAULT), stopped with their jobs.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LoadReport } from '../../src/agent/jobs.js';
import { findCgroupMounts } from '../../src/cluster/cgroup.js';
import { callAgent } from '../../src/migrate/client.js';
import { runCli } from './cli.js';
import { CLI } from './paths.js';
import { startProcess, type Started } from './processes.js';
import { becomeSubreaper, killAndReap, treeOf } from './reaper.js';

export const TOKEN = 'cluster-token-0123456789abcdef';
export const CPUS = 0.4;
/** A job that spins (a runnable thread all the time) until killed. */
export const SPIN = 'while True: pass';

export interface TestAgent {
  address: string;
  cgroup: string;
  dataDir: string;
  process: Started;
}

export interface AgentSetup {
  /** More options of `ferry agent`. */
  extra?: string[];
  /** Cores of its cgroup's quota; null: no cgroup. */
  cpus?: number | null;
  /** VAR=value for its environment (FERRY_FAULT). */
  env?: string[];
  /** Listen there (an agent started again), else on a port the kernel picks. */
  listen?: string;
  /** Its data directory (an agent started again), else a new one. */
  dataDir?: string;
}

export interface ClusterLab {
  work: string;
  tokenFile: string;
  /** An agent on loopback; it and every job it has die with the tests. */
  startAgent(setup?: AgentSetup): Promise<TestAgent>;
}

/** A working directory and token for the file's tests (call in `before`; this process becomes a subreaper). */
export function clusterLab(prefix: string, cleanup: (step: () => void | Promise<void>) => void): ClusterLab {
  becomeSubreaper();
  const work = mkdtempSync(`${tmpdir()}/${prefix}`);
  cleanup(() => rmSync(work, { recursive: true, force: true }));
  const tokenFile = join(work, 'token');
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  let agents = 0;
  const startAgent = async (setup: AgentSetup = {}): Promise<TestAgent> => {
    const n = agents++;
    const cpus = setup.cpus === undefined ? CPUS : setup.cpus;
    const cgroup = `ferry-test-${process.pid}-${n}`;
    const dataDir = setup.dataDir ?? join(work, `agent-${n}`);
    const p = await startProcess('/usr/bin/env', [
      ...(setup.env ?? []),
      CLI,
      ...[
        'agent',
        '--listen',
        setup.listen ?? '127.0.0.1:0',
        '--data-dir',
        dataDir,
        '--token-file',
        tokenFile,
      ],
      ...(cpus === null ? [] : ['--cgroup', cgroup, '--cpus', String(cpus)]),
      ...(setup.extra ?? []),
    ]);
    cleanup(async () => {
      // The agent through its ChildProcess (which reaps it), then its jobs, ours once it is gone.
      const jobs = treeOf(p.pid).slice(1);
      await p.stop();
      jobs.forEach(killAndReap);
      const mounts = findCgroupMounts();
      for (const root of [mounts.v1Cpu, mounts.v2?.root])
        if (root && existsSync(join(root, cgroup))) rmdirSync(join(root, cgroup));
    });
    const address = /listening on (\S+) /.exec(p.readyLine)?.[1];
    assert.ok(address, p.readyLine);
    return { address, cgroup, dataDir, process: p };
  };
  return { work, tokenFile, startAgent };
}

export const endpoint = (a: TestAgent | string) => {
  const address = typeof a === 'string' ? a : a.address;
  return { host: address.split(':')[0]!, port: Number(address.split(':')[1]), token: TOKEN };
};

export const load = (a: TestAgent | string): Promise<LoadReport> =>
  callAgent(endpoint(a), 'GET', '/v1/load', undefined, 10_000);

/** `ferry run --agent a ... --json`: the job started. */
export async function run(
  lab: ClusterLab,
  a: TestAgent,
  args: string[],
  name?: string,
): Promise<{ id: string; pid: number }> {
  const r = await runCli([
    ...['run', '--agent', a.address, '--token-file', lab.tokenFile, '--json'],
    ...(name ? ['--name', name] : []),
    ...args,
  ]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { id: string; pid: number };
}

/** `probe`'s first answer other than undefined, tried every 200 ms for `ms`. */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  ms = 20_000,
): Promise<T> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 200))) {
    const value = await probe();
    if (value !== undefined) return value;
  }
  throw new Error(`no ${what} within ${ms} ms`);
}
