// Cleanup steps a test file registers as it starts things; all of them run at the end, in reverse
// order, even when one fails: nothing a test started may outlive it.
import { after } from 'node:test';

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
