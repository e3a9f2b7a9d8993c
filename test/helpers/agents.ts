// A lab of hosts for tests across agents: network namespaces (netns.ts), a token file, a work
// directory, and ferry agents started on the hosts; what a test needs to migrate between them and
// to check what is left.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createConnection, createServer, type Socket } from 'node:net';
import { before } from 'node:test';
import { runCli, type CliResult } from './cli.js';
import { makeHosts, type Host } from './netns.js';
import { CLI } from './paths.js';
import { startProcess, traceState, type Started } from './processes.js';
import { becomeSubreaper, killAndReap, treeOf } from './reaper.js';

export const TOKEN = 'test-token-0123456789abcdef';
/** A token that acts only for uid 4242's processes and images. */
export const LIMITED_TOKEN = 'limited-token-0123456789abcdef';
export const PORT = 7070;

export interface Lab {
  hosts: Host[];
  /** The test file's work directory. */
  work: string;
  tokenFile: string;
  /** A fresh directory in the work directory. */
  dir(): string;
  cleanup: (step: () => void | Promise<void>) => void;
}

/** A lab of `count` hosts, made now; `cleanup` removes it. */
export function makeLab(count: number, prefix: string, cleanup: Lab['cleanup']): Lab {
  const lab = emptyLab(cleanup);
  fillLab(lab, count, prefix);
  return lab;
}

/** Before the tests: a lab of `count` hosts, removed with everything else after them. */
export function setUpLab(count: number, prefix: string, cleanup: Lab['cleanup']): Lab {
  const lab = emptyLab(cleanup);
  before(() => {
    becomeSubreaper();
    fillLab(lab, count, prefix);
  });
  return lab;
}

function emptyLab(cleanup: Lab['cleanup']): Lab {
  let n = 0;
  const lab: Lab = {
    hosts: [],
    work: '',
    tokenFile: '',
    dir: () => mkdtempSync(`${lab.work}/${n++}-`),
    cleanup,
  };
  return lab;
}

function fillLab(lab: Lab, count: number, prefix: string): void {
  lab.work = mkdtempSync(`${tmpdir()}/${prefix}-`);
  lab.cleanup(() => rmSync(lab.work, { recursive: true, force: true }));
  lab.tokenFile = `${lab.work}/token`;
  writeFileSync(lab.tokenFile, `${TOKEN}\n${LIMITED_TOKEN} uid=4242\n`, { mode: 0o600 });
  lab.hosts = makeHosts(count, lab.cleanup);
}

export interface AgentProc {
  host: Host;
  dataDir: string;
  process: Started;
}

export async function startAgentOn(
  lab: Lab,
  host: Host,
  dataDir = lab.dir(),
  options: { port?: number; extra?: string[]; env?: Record<string, string> } = {},
): Promise<AgentProc> {
  // env(1) execs the agent in turn: the PID is the agent's.
  const env = Object.entries(options.env ?? {}).map(([k, v]) => `${k}=${v}`);
  const p = await startProcess('ip', [
    ...['netns', 'exec', host.ns, ...(env.length > 0 ? ['env', ...env] : []), CLI, 'agent'],
    ...[
      '--listen',
      `${host.addr}:${options.port ?? PORT}`,
      '--data-dir',
      dataDir,
      '--token-file',
      lab.tokenFile,
    ],
    // Plain HTTP on the lab's private addresses, unless a test gives TLS.
    ...['--idle-timeout', '2000', ...(options.extra?.includes('--tls-cert') ? [] : ['--insecure'])],
    ...(options.extra ?? []),
  ]);
  // What it runs (migrated processes, restored jobs, stubs) goes first, by PID, even where a test
  // failed before killing it: once let run, a migrated process would outlive its agent.
  lab.cleanup(async () => {
    treeOf(p.pid).slice(1).reverse().forEach(killAndReap);
    await p.stop();
  });
  assert.match(p.readyLine, /^ferry agent listening on /);
  return { host, dataDir, process: p };
}

export async function api<T>(host: Host, path: string, token = TOKEN): Promise<{ status: number; body: T }> {
  const res = await fetch(`http://${host.addr}:${PORT}${path}`, {
    headers: { authorization: `Bearer ${token}` },
  });
  const text = await res.text();
  return { status: res.status, body: (path === '/metrics' ? text : JSON.parse(text)) as T };
}

/** Run `ferry migrate` on host `from`, to `to` (a host, or an address). */
export function migrateCli(
  lab: Lab,
  from: Host,
  pid: number,
  to: Host | string,
  extra: string[] = [],
  options: { env?: Record<string, string>; onStart?: (pid: number) => void } = {},
): Promise<CliResult> {
  const target = typeof to === 'string' ? to : `${to.addr}:${PORT}`;
  return runCli(['migrate', String(pid), '--to', target, '--token-file', lab.tokenFile, '--json', ...extra], {
    wrap: from.exec,
    ...options,
  });
}

/** The process runs on, untraced, not stopped. */
export function runsFree(pid: number): void {
  const { state, tracerPid } = traceState(pid);
  assert.notEqual(state, 'T', `process ${pid} is stopped`);
  assert.equal(tracerPid, 0, `process ${pid} is still traced`);
}

/** Nothing of a failed migration is left at the target: no files, no held process. */
export async function targetClean(agent: AgentProc): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const { body } = await api<{ processes: { state: string }[] }>(agent.host, '/v1/processes');
    const left = readdirSync(`${agent.dataDir}/migrations`);
    if (left.length === 0 && body.processes.every((p) => p.state !== 'held' && p.state !== 'running')) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`the target kept something: ${readdirSync(`${agent.dataDir}/migrations`).join(' ')}`);
}

export type { CliResult };

/**
 * A TCP relay to the agent on `to` that flips one byte `at` bytes into what it forwards: it
 * listens on the address .254 of `from`'s network (on this test's side of the link). `to` is the
 * address to migrate to; close() ends it.
 */
export async function corruptingRelay(
  from: Host,
  to: Host,
  at: number,
): Promise<{ to: string; close: () => void }> {
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = createConnection(PORT, to.addr);
    sockets.add(client).add(upstream);
    let seen = 0;
    client.on('data', (chunk: Buffer) => {
      if (seen <= at && at < seen + chunk.length)
        chunk.writeUInt8(chunk.readUInt8(at - seen) ^ 0x01, at - seen);
      seen += chunk.length;
      upstream.write(chunk);
    });
    upstream.pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('end', () => upstream.end());
  });
  const addr = from.addr.replace(/\.\d+$/, '.254');
  await new Promise<void>((resolve) => server.listen(0, addr, resolve));
  return {
    to: `${addr}:${(server.address() as { port: number }).port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
