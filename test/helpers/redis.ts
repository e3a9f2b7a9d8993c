// redis-server as a test workload: options for a server that keeps nothing on disk, and
// redis-cli to fill it with keys and check every one of them.
import { execFileSync } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';

/** No snapshots or append-only file (nothing forks, nothing is written), reachable from any host. */
export const REDIS_OPTIONS = ['--save', '', '--appendonly', 'no', '--protected-mode', 'no'];
export const KEYS = 100_000;

/** redis-cli against the server at `host`:`port`; its reply, trimmed. */
export function redisCli(host: string, port: number, ...args: string[]): string {
  return execFileSync('redis-cli', ['-h', host, '-p', String(port), ...args], { encoding: 'utf8' }).trim();
}

/** SET key:<i> value-<i> for every i below KEYS, pipelined; redis-cli's summary. */
export function loadKeys(host: string, port: number): string {
  const load = Array.from({ length: KEYS }, (_, i) => `SET key:${i} value-${i}\r\n`).join('');
  return execFileSync('redis-cli', ['-h', host, '-p', String(port), '--pipe'], {
    input: load,
    encoding: 'utf8',
  });
}

/** Read every key on the server: '-1' when each holds its value, else the first index that does not. */
export function checkKeys(host: string, port: number): string {
  const script = `for i=0,${KEYS - 1} do if redis.call('GET','key:'..i) ~= 'value-'..i then return i end end return -1`;
  return redisCli(host, port, 'EVAL', script, '0');
}

/**
 * A TCP port the kernel gives out on `host` now (bound to port 0, then let go), for a server the
 * test starts next: never a fixed one another program of the host may hold.
 */
export async function freePort(host: string): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, host, resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
