// An etcd cluster on this machine's loopback (Debian's etcd-server), for `npm run bench:balance --
// --etcd` and the tests: `members` members, each with a client and a peer port the kernel chose,
// stopped by PID.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { FerryError } from '../errors.js';

export interface LocalEtcd {
  /** The client URL of each member. */
  urls: string[];
  /** Each member's process. */
  members: ChildProcess[];
  stop(): Promise<void>;
}

const START_TIMEOUT_MS = 20_000;

/** A port the kernel has free now (bound and let go: etcd binds it next). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
    return ((await res.json()) as { health?: string }).health === 'true';
  } catch {
    return false;
  }
}

type EtcdSetup = { members: number; dir: string; binary?: string };

/** Tries at most: a port the kernel gave may be taken (by an outgoing connection) before etcd binds it. */
const TRIES = 3;

export async function startLocalEtcd(o: EtcdSetup): Promise<LocalEtcd> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(o, attempt);
    } catch (err) {
      if (attempt >= TRIES || !(err instanceof Error) || !err.message.includes('address already in use'))
        throw err;
    }
  }
}

async function startOnce(o: EtcdSetup, attempt: number): Promise<LocalEtcd> {
  const binary = o.binary ?? 'etcd';
  const ports = await Promise.all(
    Array.from({ length: o.members }, async () => ({ client: await freePort(), peer: await freePort() })),
  );
  const cluster = ports.map((p, i) => `m${i}=http://127.0.0.1:${p.peer}`).join(',');
  const token = `ferry-${randomBytes(6).toString('hex')}`;
  const members: ChildProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(
      members.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGTERM');
          }),
      ),
    );
  };
  const urls = ports.map((p) => `http://127.0.0.1:${p.client}`);
  try {
    let failed: string | undefined;
    ports.forEach((p, i) => {
      const dataDir = join(o.dir, `etcd-m${i}-${attempt}`);
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      const child = spawn(
        binary,
        [
          ...['--name', `m${i}`, '--data-dir', dataDir],
          ...['--listen-client-urls', urls[i]!, '--advertise-client-urls', urls[i]!],
          ...['--listen-peer-urls', `http://127.0.0.1:${p.peer}`],
          ...['--initial-advertise-peer-urls', `http://127.0.0.1:${p.peer}`],
          ...[
            '--initial-cluster',
            cluster,
            '--initial-cluster-state',
            'new',
            '--initial-cluster-token',
            token,
          ],
          ...['--logger', 'zap', '--log-level', 'error'],
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let err = '';
      child.stderr.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-2000)));
      child.once(
        'error',
        (e) => (failed = `cannot run ${binary}: ${e.message} (Debian: apt-get install etcd-server)`),
      );
      child.once('exit', (code) => (failed ??= `etcd member m${i} exited (${code}): ${err.trim()}`));
      members.push(child);
    });
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (const url of urls)
      while (!(await healthy(url))) {
        if (failed) throw new FerryError('FERRY_INTERNAL', failed);
        if (Date.now() > deadline)
          throw new FerryError('FERRY_INTERNAL', `etcd at ${url} did not become healthy`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    return { urls, members, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
