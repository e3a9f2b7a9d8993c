// dumpEvery(): checkpoint a process periodically while it runs (`ferry dump --every`), for fault
// tolerance. Each checkpoint is an image of its own in a numbered directory; after the first of a
// chain, each stores only the pages written since the one before (dirty tracking held open by this
// process between dumps) and names that one as its parent. `keep` bounds the images kept: a chain
// is at most `keep` long, and a chain is deleted once none of the newest `keep` images is in it.
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { dump, type DumpResult } from './checkpoint.js';
import { FerryError, isFerryError } from './errors.js';
import { DumpChain } from './memory/tracking.js';
import { now } from './timings.js';

export interface EveryOptions {
  /** The directory that holds the numbered images. */
  dir: string;
  intervalMs: number;
  /** Images to keep at least (the newest); older chains go. Unset: all are kept. */
  keep?: number;
  compress?: boolean;
  /** Stops the loop after the dump under way. */
  signal?: AbortSignal;
  onDump?: (result: DumpResult & { image: string; chainLength: number }) => void;
  onWarning?: (message: string) => void;
}

export interface EveryResult {
  pid: number;
  /** Checkpoints taken, and the newest one's directory. */
  dumps: number;
  latest: string | null;
  /** Why the loop ended. */
  ended: 'stopped' | 'exited';
}

/** A chain is this long at most when nothing is deleted, so that a restore never opens too many images. */
const MAX_CHAIN = 16;
const NAME = /^\d{6}$/;

function firstFreeNumber(dir: string): number {
  const used = readdirSync(dir)
    .filter((n) => NAME.test(n))
    .map(Number);
  return used.length === 0 ? 1 : Math.max(...used) + 1;
}

/** The directory the next checkpoint in `dir` goes in (numbered after the newest there). */
export function nextCheckpoint(dir: string): string {
  return join(dir, String(firstFreeNumber(dir)).padStart(6, '0'));
}

/** Checkpoint `pid` into `options.dir` every `options.intervalMs` until it exits or `signal` aborts. */
export async function dumpEvery(pid: number, options: EveryOptions): Promise<EveryResult> {
  const { dir, keep } = options;
  if (keep !== undefined && (!Number.isInteger(keep) || keep < 1))
    throw new FerryError('FERRY_USAGE', '--keep takes a whole number of images, 1 or more');
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new FerryError('FERRY_IMAGE_WRITE', `cannot create ${dir}: ${String(err)}`, { cause: err });
  }
  const chain = new DumpChain(options.onWarning);
  /** Images this run made, by chain, oldest first. */
  const chains: string[][] = [];
  let next = firstFreeNumber(dir);
  let dumps = 0;
  let latest: string | null = null;
  const prune = (): void => {
    if (keep === undefined) return;
    let kept = 0;
    for (let i = chains.length - 1; i >= 0; i--) {
      if (kept >= keep) {
        for (const name of chains[i]!) rmSync(join(dir, name), { recursive: true, force: true });
        chains.splice(i, 1);
      } else {
        kept += chains[i]!.length;
      }
    }
  };
  try {
    while (!options.signal?.aborted) {
      const started = now();
      if (chain.length >= Math.min(keep ?? MAX_CHAIN, MAX_CHAIN)) chain.reset();
      if (chain.length === 0) chains.push([]);
      const name = String(next++).padStart(6, '0');
      const image = join(dir, name);
      let result: DumpResult;
      try {
        result = await dump(pid, {
          dir: image,
          leaveRunning: true,
          tracking: chain,
          compress: options.compress,
          onWarning: options.onWarning,
        });
      } catch (err) {
        rmSync(image, { recursive: true, force: true });
        if (chains.at(-1)!.length === 0) chains.pop();
        if (dumps > 0 && isFerryError(err, 'FERRY_PROCESS_EXITED', 'FERRY_NO_SUCH_PROCESS', 'FERRY_ZOMBIE'))
          return { pid, dumps, latest, ended: 'exited' };
        throw err;
      }
      chains.at(-1)!.push(name);
      dumps++;
      latest = image;
      prune();
      options.onDump?.({ ...result, image, chainLength: chain.length });
      const wait = options.intervalMs - (now() - started);
      if (wait > 0) await sleep(wait, undefined, { signal: options.signal }).catch(() => {});
    }
    return { pid, dumps, latest, ended: 'stopped' };
  } finally {
    chain.reset(); // the process is no longer tracked once this returns
  }
}
