// Small statistics for benchmark runs: medians and a table row formatter.
import { parseArgs, type ParseArgsConfig } from 'node:util';

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Run `fn` `runs` times after one warm-up run; returns each run's wall time in milliseconds. */
export function timeRuns(runs: number, fn: () => void): number[] {
  fn();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  return times;
}

/** A benchmark's command line, as parseArgs() reads it; a bad one ends the run with a clear error. */
export function benchArgs<T extends ParseArgsConfig['options']>(
  options: T,
): ReturnType<typeof parseArgs<{ options: T }>> {
  try {
    return parseArgs({ options });
  } catch (err) {
    refuse(err instanceof Error ? err.message : String(err));
  }
}

/** End the run over a bad command line: the message, exit 2 (no stack trace). */
export function refuse(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}
