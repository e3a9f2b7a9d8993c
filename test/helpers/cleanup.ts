// Cleanup steps a test file registers as it starts things; all of them run at the end, in reverse
// order, even when one fails: nothing a test started may outlive it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { after, before } from 'node:test';

export function cleanupAfterAll(): (step: () => void | Promise<void>) => void {
  const steps: (() => void | Promise<void>)[] = [];
  after(async () => {
    const failures: unknown[] = [];
    for (const step of steps.reverse()) {
      try {
        await step();
      } catch (err) {
        failures.push(err);
      }
    }
    if (failures.length > 0) throw failures[0];
  });
  return (step) => {
    steps.push(step);
  };
}

/**
 * A directory for a test file's work, made before its first test and removed after the last:
 * `dir()` gives a fresh directory inside it.
 */
export function workDirs(
  prefix: string,
  cleanup: (step: () => void) => void,
): { root: () => string; dir: () => string } {
  let work = '';
  let n = 0;
  before(() => {
    work = mkdtempSync(`${tmpdir()}/${prefix}-`);
    cleanup(() => rmSync(work, { recursive: true, force: true }));
  });
  return { root: () => work, dir: () => mkdtempSync(`${work}/${n++}-`) };
}
