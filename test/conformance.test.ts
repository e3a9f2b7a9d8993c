// Conformance: one kind of process state per C fixture (test/fixtures/conformance/), set up by the
// fixture, checkpointed, the fixture killed, restored, and checked by the restored fixture itself
// (the shape of CRIU's ZDTM). docs/STATE.md lists every kind and where it is tested.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { cleanupAfterAll, workDirs } from './helpers/cleanup.js';
import { runCli } from './helpers/cli.js';
import { startConforming, type Conforming } from './helpers/conformance.js';
import { reportLines, waitForLines } from './helpers/report.js';
import { processState } from './helpers/processes.js';
import { becomeSubreaper, killAndReap, treeOf } from './helpers/reaper.js';

const cleanup = cleanupAfterAll();
const { dir } = workDirs('ferry-conformance', cleanup);
before(becomeSubreaper);

/** Start conformance fixture `name` in a fresh directory. */
const start = (name: string): Promise<Conforming> => startConforming(dir(), name, cleanup);

/** Dump the fixture (killing it), restore it; the restored PID, with what both commands said. */
async function moveThroughImage(f: Conforming): Promise<{ pid: number; said: string }> {
  const image = `${f.work}/image`;
  const descendants = treeOf(f.pid).slice(1);
  const dumped = await runCli(['dump', String(f.pid), '-D', image]);
  assert.equal(dumped.code, 0, dumped.stderr);
  // Its descendants come to this test process as orphans: reaped, their PIDs are free again.
  descendants.forEach(killAndReap);
  // `ferry show` reads every kind of record the image has, in words and in JSON.
  for (const json of [[], ['--json']]) {
    const shown = await runCli(['show', image, ...json]);
    assert.equal(shown.code, 0, shown.stderr);
  }
  const restored = await runCli(['restore', '-D', image]);
  assert.equal(restored.code, 0, restored.stderr);
  const pid = Number(restored.stdout.trim());
  cleanup(() => killAndReap(pid));
  return { pid, said: dumped.stderr + restored.stderr };
}

/** The kinds whose state comes back whole, with not a warning. */
const WHOLE = [
  'locks',
  'task',
  'shared-memory',
  'zombie',
  'pipes',
  'fds',
  'memory',
  'sockets',
  'cwd',
  'deleted-fifo',
  'guard',
  'unix-unlinked',
  'epoll-closed',
  'seccomp',
  'accept-queue',
  'fanotify',
  'packet',
  'inotify-deleted',
];

for (const name of WHOLE) {
  test(`conformance: ${name} comes back as it was`, async () => {
    const f = await start(name);
    assert.equal(await f.check(), 'PASS', 'the fixture checks itself before anything happens');
    const { pid, said } = await moveThroughImage(f);
    assert.equal(said, '', 'no warning');
    assert.equal(await f.check(pid), 'PASS');
  });
}

test('a signal sent while the process is frozen wakes it from the pause() it was in, after the restore', async () => {
  const f = await start('locks');
  const seen = reportLines(f.report).length;
  // ferry stops itself once the fixture is frozen; the check signal sent then is pending in the image.
  let ferry = 0;
  const dumping = runCli(['dump', String(f.pid), '-D', `${f.work}/image`], {
    env: { FERRY_FAULT: 'frozen:STOP' },
    onStart: (pid) => (ferry = pid),
  });
  while (processState(ferry) !== 'T') await new Promise((r) => setTimeout(r, 5));
  const descendants = treeOf(f.pid).slice(1);
  process.kill(f.pid, 'SIGUSR1');
  process.kill(ferry, 'SIGCONT');
  const dumped = await dumping;
  assert.equal(dumped.code, 0, dumped.stderr);
  descendants.forEach(killAndReap);
  const restored = await runCli(['restore', '-D', `${f.work}/image`]);
  assert.equal(restored.code, 0, restored.stderr);
  cleanup(() => killAndReap(Number(restored.stdout.trim())));
  // Its pause() fails with EINTR after the handler, as it would have: restarted, it would sleep on.
  assert.equal((await waitForLines(f.report, seen + 1)).at(-1), 'PASS');
});

/** The kinds a dump refuses, by name, leaving the process as it was. */
const REFUSED: [string, RegExp][] = [
  [
    'clone-files',
    /it shares its descriptor table \(CLONE_FILES\) with its parent \d+, which ferry cannot restore yet/,
  ],
  ['scm-rights', /is a Unix socket with descriptors or credentials in flight in its queue \(SCM_RIGHTS\)/],
  ['aio', /VMA 0x[0-9a-f]+-0x[0-9a-f]+ \(deleted-file\) is the ring of an AIO context \(io_setup\)/],
  ['packet-ring', /fd \d+ is a packet socket with mmap rings \(PACKET_RX_RING\/PACKET_TX_RING\)/],
];

for (const [name, message] of REFUSED) {
  test(`conformance: ${name} is refused by name, the process untouched`, async () => {
    const f = await start(name);
    const dumped = await runCli(['dump', String(f.pid), '-D', `${f.work}/image`]);
    assert.equal(dumped.code, 1);
    assert.match(dumped.stderr, message);
    assert.equal(await f.check(), 'PASS');
  });
}

test('locks: a copy restored while the original holds them is refused, naming the lock', async () => {
  const f = await start('locks');
  const image = `${f.work}/image`;
  const dumped = await runCli(['dump', String(f.pid), '-D', image, '--leave-running']);
  assert.equal(dumped.code, 0, dumped.stderr);
  const copy = await runCli(['restore', '-D', image, '--same-pid', 'no']);
  assert.equal(copy.code, 1);
  assert.match(
    copy.stderr,
    /the write flock\(\) lock that fd \d+ held on \/.*\/flock conflicts with another process's lock now/,
  );
  assert.equal(await f.check(), 'PASS', 'the original keeps them');
});
