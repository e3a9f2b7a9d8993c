// Milliseconds spent in each named stage of an operation, in order: reported with --json so that
// slow steps show (and the benchmarks can say where time goes).

/**
 * Milliseconds on the monotonic clock. process.hrtime() is part of Node's bootstrap, where the first
 * performance.now() loads perf_hooks (nine builtin modules, about 1 ms of a command's start here).
 */
export function now(): number {
  const [s, ns] = process.hrtime();
  return s * 1e3 + ns / 1e6;
}

export class Timings {
  private readonly stages: Record<string, number> = {};
  private last = now();

  /** Close the current stage under `name`. */
  mark(name: string): void {
    const at = now();
    this.stages[name] = (this.stages[name] ?? 0) + (at - this.last);
    this.last = at;
  }

  toJSON(): Record<string, number> {
    return Object.fromEntries(Object.entries(this.stages).map(([k, v]) => [k, Math.round(v * 10) / 10]));
  }
}
