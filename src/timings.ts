// Milliseconds spent in each named stage of an operation, in order: reported with --json so that
// slow steps show (and the benchmarks can say where time goes).

export class Timings {
  private readonly stages: Record<string, number> = {};
  private last = performance.now();

  /** Close the current stage under `name`. */
  mark(name: string): void {
    const now = performance.now();
    this.stages[name] = (this.stages[name] ?? 0) + (now - this.last);
    this.last = now;
  }

  toJSON(): Record<string, number> {
    return Object.fromEntries(Object.entries(this.stages).map(([k, v]) => [k, Math.round(v * 10) / 10]));
  }
}
