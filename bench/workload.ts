// What the benchmarks share: CRIU's presence, C fixture workloads started with stdout on a file,
// and wall-clock timing.
import { closeSync, openSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fixture } from '../test/helpers/fixtures.js';

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
