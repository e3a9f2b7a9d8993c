// ferry as a library: look at a process, dump it, restore a copy, and migrate it to an agent.
// Run as root: `node dist/examples/library.js`.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import {
  check,
  dump,
  inspect,
  isFerryError,
  migrate,
  parseTokenFile,
  readImage,
  restore,
  startAgent,
} from 'ferry';

console.log('dirty tracking:', check().dirtyTracking); // CheckReport: { kernel, features, dirtyTracking, ok }
const job = spawn('sleep', ['600'], { stdio: 'ignore' }); // a process to work on
const pid = job.pid!;
const work = mkdtempSync(`${tmpdir()}/ferry-example-`);

const space = inspect(pid, { vmas: 'heap,stack' });
for (const vma of space.vmas) console.log(vma.kind, vma.start, vma.end, vma.pages.dump);
console.log('checkpoint bytes:', space.checkpointBytes);
try {
  inspect(99999999);
} catch (err) {
  if (isFerryError(err, 'FERRY_NO_SUCH_PROCESS')) console.log('no process 99999999');
}

const dumped = await dump(pid, { dir: `${work}/job`, leaveRunning: true });
console.log(`dumped: frozen ${dumped.frozenMs.toFixed(1)} ms, ${dumped.pages} pages`);
const image = await readImage(`${work}/job`); // verified; image.manifest.state is typed
const copy = await restore(image, { samePid: 'no' }); // the original runs on: a second copy
console.log(`restored ${image.manifest.state.command} as ${copy.pid}`);
process.kill(copy.pid, 'SIGKILL');

// An agent on this host, and the job moved to it: the agent's copy runs, the original is gone.
const token = randomBytes(24).toString('base64url');
const agent = await startAgent({
  host: '127.0.0.1',
  port: 0, // a free port
  dataDir: `${work}/agent`,
  tokens: parseTokenFile(token, 'inline'),
});
const [host, port] = agent.address.split(':') as [string, string];
const moved = await migrate(pid, { to: { host, port: Number(port), token } });
console.log(`migrated ${pid} as ${moved.targetPid}: downtime ${moved.downtimeMs.toFixed(1)} ms`);
process.kill(moved.targetPid, 'SIGKILL');
await agent.close();
rmSync(work, { recursive: true });
