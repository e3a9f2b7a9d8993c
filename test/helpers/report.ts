// Fixtures that report through a file (their stdout cannot be a pipe across a restore until pipes
// are checkpointed): wait for lines to appear in it.
import { existsSync, readFileSync } from 'node:fs';

export function reportLines(file: string): string[] {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
}

/** Wait until the report has `count` lines; returns them all. */
export async function waitForLines(file: string, count: number, timeoutMs = 10_000): Promise<string[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const lines = reportLines(file);
    if (lines.length >= count) return lines;
    if (Date.now() > until)
      throw new Error(`${file}: waited for ${count} lines, have ${lines.length}: ${lines.join(' | ')}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
