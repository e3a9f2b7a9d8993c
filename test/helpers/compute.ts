// A python3 computation for end-to-end tests: a chain of SHA-256 rounds whose result an
// interrupted (checkpointed, migrated) run must reproduce exactly.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { PYTHON } from './paths.js';
import { killAndReap } from './reaper.js';

const COMPUTE = `
import hashlib, os, sys
os.closerange(3, 65536)
h = b'ferry'
for i in range(int(sys.argv[2])):
    h = hashlib.sha256(h).digest()
    if i == 50000:
        open(sys.argv[1] + '.started', 'w').close()
open(sys.argv[1], 'w').write(h.hex())
`;

/** Run `rounds` rounds into `out`; `<out>.started` appears once it is well under way. */
export function compute(
  out: string,
  rounds: number,
  cleanup: (step: () => void) => void,
): { pid: number; done: Promise<void> } {
  const child = spawn(PYTHON, ['-c', COMPUTE, out, String(rounds)], { stdio: 'ignore' });
  const pid = child.pid!;
  child.unref(); // killAndReap may reap it first, and Node's handle would wait for it in vain
  cleanup(() => killAndReap(pid));
  return { pid, done: new Promise((resolve) => child.once('exit', () => resolve())) };
}

/** Wait until `path` exists and its content matches `complete`. */
export async function fileContent(path: string, complete = /^/, timeoutMs = 30_000): Promise<string> {
  for (
    const until = Date.now() + timeoutMs;
    Date.now() < until;
    await new Promise((r) => setTimeout(r, 20))
  ) {
    try {
      const text = readFileSync(path, 'utf8');
      if (complete.test(text)) return text;
    } catch {
      // not yet
    }
  }
  throw new Error(`${path} never appeared complete`);
}
