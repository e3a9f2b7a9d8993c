// Process trees through dump and restore: a shell pipeline, python3 threads feeding a child through
// a pipe, and a tree with its own session, a process group, a zombie and a pending signal. Each is
// checked from outside (/proc: who is whose parent, group and session) and from what it writes.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createConnection } from 'node:net';
import { spawn } from 'node:child_process';
import { parseStat } from '../src/proc/stat.js';
import { parseSysvShm, type ShmSegment } from '../src/proc/sysvipc.js';
import { removeSegment, SHM_DEST } from '../src/sys/shm.js';
import { cleanupAfterAll, workDirs } from './helpers/cleanup.js';
import { cliOk, restoreCli, runCli } from './helpers/cli.js';
import { fileContent } from './helpers/compute.js';
import { CLI, FIXTURE_SOURCES, PYTHON } from './helpers/paths.js';
import { startLogged, traceState } from './helpers/processes.js';
import { becomeSubreaper, killAndReap, killTree, treeOf } from './helpers/reaper.js';

const cleanup = cleanupAfterAll();
const { dir } = workDirs('ferry-tree', cleanup);

before(() => becomeSubreaper());

/** Start `cmd` with its output in `<d>/log`; the whole tree it makes is killed at the end. */
async function startTree(d: string, cmd: string, args: string[]): Promise<number> {
  const pid = await startLogged(`${d}/log`, cmd, args, /^/, cleanup);
  cleanup(() => killTree(pid));
  return pid;
}

/** Restore `image`; the tree it makes is killed at the end. */
async function restoreTree(image: string, ...extra: string[]): Promise<number> {
  const pid = await restoreCli(image, cleanup, ...extra);
  cleanup(() => killTree(pid));
  return pid;
}

/**
 * Dump the tree of `pid` into a new image, killing it; its processes, which come to this test
 * process as orphans, are reaped so that their PIDs are free again.
 */
async function dumpTree(pid: number): Promise<string> {
  const image = dir();
  await cliOk(['dump', String(pid), '-D', image]);
  const shown = JSON.parse(await cliOk(['show', image, '--json'])) as {
    manifest: { tree: { pid: number }[] };
  };
  for (const p of shown.manifest.tree) killAndReap(p.pid);
  return image;
}

async function until(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
  for (const end = Date.now() + timeoutMs; !check(); await sleep(20))
    assert.ok(Date.now() < end, `timed out waiting until ${what}`);
}

const lines = (path: string): string[] => readFileSync(path, 'utf8').split('\n').slice(0, -1);

/** Two jobs of ten steps each, one line per step into a file of their own. */
const MAKEFILE = ['a', 'b']
  .map((job) => `${job}:\n\t@for i in 1 2 3 4 5 6 7 8 9 10; do echo ${job}$$i >> ${job}; sleep 0.1; done\n`)
  .join('');

test('make -j2 dumped mid-build, its jobserver pipe shared with its jobs: both jobs finish after restore', async () => {
  const d = dir();
  writeFileSync(`${d}/Makefile`, `all: a b\n${MAKEFILE}`);
  const pid = await startTree(d, 'make', ['-C', d, '-j2']);
  const steps = (job: string): string[] => (existsSync(`${d}/${job}`) ? lines(`${d}/${job}`) : []);
  await until('both jobs run', () => steps('a').length >= 2 && steps('b').length >= 2);
  const image = await dumpTree(pid);
  assert.ok(steps('a').length < 10 && steps('b').length < 10, 'dumped mid-build');
  await restoreTree(image);
  await until('both jobs are done', () => steps('a').length === 10 && steps('b').length === 10);
  for (const job of ['a', 'b'])
    assert.deepEqual(
      steps(job),
      Array.from({ length: 10 }, (_, i) => `${job}${i + 1}`),
      `job ${job}: each step once`,
    );
});

test('a shell pipeline restores as a tree, and its output goes on unbroken', async () => {
  const d = dir();
  const out = `${d}/out`;
  const script = 'i=0; while :; do echo $i; i=$((i+1)); sleep 0.01; done | sed -u "s/^/n=/" | cat > "$0"';
  const pid = await startTree(d, 'sh', ['-c', script, out]);
  await fileContent(out, /^n=20$/m);
  const processes = treeOf(pid).length;
  assert.ok(processes >= 4, `sh, its loop, sed and cat (${processes})`);
  const image = await dumpTree(pid);
  const atDump = lines(out).length;
  assert.equal(await restoreTree(image, '--same-pid', 'require'), pid);
  await until('the pipeline wrote 50 more lines', () => lines(out).length > atDump + 50);
  killTree(pid); // now: its loop forks all the time, taking PIDs the next tests restore under
  lines(out).forEach((line, i) => assert.equal(line, `n=${i}`, `line ${i + 1} of the pipeline's output`));
});

test('a FIFO between a consumer and the producer it started comes back with what it held', async () => {
  const d = dir();
  const out = `${d}/out`;
  const script =
    'mkfifo "$0/fifo"; (i=0; while :; do echo $i; i=$((i+1)); sleep 0.01; done > "$0/fifo") & ' +
    'exec sed -u "s/^/n=/" < "$0/fifo" > "$0/out"';
  const pid = await startTree(d, 'sh', ['-c', script, d]);
  await fileContent(out, /^n=20$/m);
  const image = await dumpTree(pid);
  assert.match(await cliOk(['show', image]), /FIFO \/.*\/fifo/);
  const atDump = lines(out).length;
  assert.equal(await restoreTree(image, '--same-pid', 'require'), pid);
  await until('the consumer wrote 50 more lines', () => lines(out).length > atDump + 50);
  killTree(pid);
  lines(out).forEach((line, i) => assert.equal(line, `n=${i}`, `line ${i + 1} of the consumer's output`));
});

/** The last number each thread ("t<i> <n>") got through the pipe to the child, by thread. */
function lastCounts(out: string): number[] {
  const last = [0, 0, 0, 0];
  for (const line of lines(out)) {
    const [, i, n] = /^t(\d) (\d+)$/.exec(line) ?? assert.fail(`unexpected line ${line}`);
    assert.equal(Number(n), last[Number(i)]! + 1, `thread ${i} counts on by one: ${line}`);
    last[Number(i)] = Number(n);
  }
  return last;
}

test('python3 with 4 threads writing to a pipe its child reads: after restore each counter advances and the child reads on', async () => {
  const d = dir();
  const out = `${d}/out`;
  const pid = await startTree(d, PYTHON, [`${FIXTURE_SOURCES}/threads-pipe.py`, out]);
  await until('every thread wrote', () => existsSync(out) && lastCounts(out).every((n) => n > 5));
  assert.equal(readFileSync(`/proc/${pid}/status`, 'latin1').match(/^Threads:\s+(\d+)/m)?.[1], '5');
  const image = await dumpTree(pid);
  const atDump = lastCounts(out);
  const restored = await restoreTree(image);
  await until('every thread counted 30 more, through the child', () =>
    lastCounts(out).every((n, i) => n > atDump[i]! + 30),
  );
  killTree(restored);
});

const SHARED_MAPS: Record<string, RegExp> = {
  anon: /rw-s .* \/dev\/zero \(deleted\)$/m,
  memfd: /rw-s .* \/memfd:ferry-shared \(deleted\)$/m,
  devshm: /rw-s .* \/dev\/shm\/ferry-\d+$/m,
  deleted: /rw-s .*\/mapped \(deleted\)$/m,
  sysv: /rw-s .* \/SYSV00000000 \(deleted\)$/m,
  'sysv-key': /rw-s .* \/SYSV(?!00000000)[0-9a-f]{8} \(deleted\)$/m,
};

/** The SysV segment with ID `id`, as /proc/sysvipc/shm lists it. */
const segment = (id: number): ShmSegment | undefined =>
  parseSysvShm(readFileSync('/proc/sysvipc/shm', 'latin1')).find((s) => s.id === id);

for (const [kind, mapped] of Object.entries(SHARED_MAPS)) {
  test(`a parent and child sharing memory (${kind}) share it again after restore`, async () => {
    const d = dir();
    const pid = await startTree(d, PYTHON, [`${FIXTURE_SOURCES}/shared.py`, d, kind]);
    const shmid = kind.startsWith('sysv') ? Number(await fileContent(`${d}/shmid`, /\d$/)) : undefined;
    if (shmid !== undefined) cleanup(() => segment(shmid) && removeSegment(shmid));
    if (kind === 'devshm') {
      const path = await fileContent(`${d}/path`, /\d$/);
      cleanup(() => rmSync(path, { force: true }));
    }
    const seen = (who: string): number =>
      existsSync(`${d}/${who}`) ? Number(readFileSync(`${d}/${who}`, 'utf8')) : 0;
    await until('each sees the other count', () => seen('parent') > 5 && seen('child') > 5);
    const image = await dumpTree(pid);
    if (shmid !== undefined)
      assert.match(
        await cliOk(['show', image]),
        new RegExp(`^SysV shared memory ${shmid} \\(.*, 65536 bytes, mode 600`, 'm'),
      );
    const before = [seen('parent'), seen('child')];
    const restored = await restoreTree(image);
    await until(
      'each sees the other count on',
      () => seen('parent') > before[0]! + 20 && seen('child') > before[1]! + 20,
    );
    // It maps what it mapped, which a second checkpoint takes like the first.
    assert.match(readFileSync(`/proc/${restored}/maps`, 'latin1'), mapped);
    // A segment comes back under its ID, marked for removal again if it was.
    if (shmid !== undefined) assert.equal(segment(shmid)!.mode & SHM_DEST, kind === 'sysv' ? SHM_DEST : 0);
    await cliOk(['dump', String(restored), '-D', dir(), '--leave-running']);
    killTree(restored);
    if (kind === 'sysv') assert.equal(segment(shmid!), undefined, 'gone with the last process that had it');
  });
}

test('Unix socket pairs between a parent and its child come back, with the messages queued in them', async () => {
  const d = dir();
  const pid = await startTree(d, PYTHON, [`${FIXTURE_SOURCES}/unix.py`, d]);
  const count = (): number => (existsSync(`${d}/child`) ? Number(readFileSync(`${d}/child`, 'utf8')) : 0);
  await until('the child reads the count', () => count() > 5);
  const child = treeOf(pid)[1]!;
  // Alone, its sockets' peers are outside the dump: external, named, to be replaced at restore.
  const alone = await runCli(['dump', String(child), '-D', dir(), '--leave-running']);
  assert.equal(alone.code, 0, alone.stderr);
  assert.match(
    alone.stderr,
    new RegExp(`fd \\d+ is socket:\\[\\d+\\], shared with python3 \\(process ${pid}\\) outside the dump`),
  );
  assert.equal(traceState(child).tracerPid, 0);
  const image = await dumpTree(pid);
  const shown = await cliOk(['show', image]);
  assert.match(shown, /Unix datagram socket \d+, paired with socket \d+, 3 message\(s\) queued/);
  assert.match(shown, /Unix seqpacket socket \d+, paired with socket \d+, 2 message\(s\) queued/);
  const before = count();
  const restored = await restoreTree(image);
  await until('the child reads the count on', () => count() > before + 20);
  writeFileSync(`${d}/go`, '');
  assert.equal(await fileContent(`${d}/queued`, /\|/), 'dgram-1|dgram-2|dgram-3|seq-1|seq-2');
  killTree(restored);
});

/** Connect to the Unix socket at `path`, send a line, and give back the first line answered. */
function askUnix(path: string, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    let got = '';
    socket.on('data', (chunk) => {
      got += chunk.toString();
      if (got.includes('\n')) {
        socket.destroy();
        resolve(got.split('\n')[0]!);
      }
    });
    socket.on('error', reject);
    socket.write(`${line}\n`);
  });
}

test('a server listening on a Unix socket path, with its child connected, listens and serves on after restore', async () => {
  const d = dir();
  const pid = await startTree(d, PYTHON, [`${FIXTURE_SOURCES}/unix-server.py`, d]);
  const count = (): number => (existsSync(`${d}/server`) ? Number(readFileSync(`${d}/server`, 'utf8')) : 0);
  await until('the server hears its child', () => count() > 5);
  assert.equal(await askUnix(`${d}/sock`, 'ping'), 'pong');
  const image = await dumpTree(pid);
  assert.match(await cliOk(['show', image]), /listening on .*\/sock/);
  const before = count();
  const restored = await restoreTree(image);
  await until('the server hears its child on', () => count() > before + 20);
  assert.equal(await askUnix(`${d}/sock`, 'ping'), 'pong');
  killTree(restored);
});

interface Shape {
  role: string;
  state: string;
  parent: string;
  group: string;
  session: string;
}

/**
 * The tree of the tree.py fixture by role (its processes' names): each one's parent, group leader
 * and session leader by role. The root's group and session are outside the tree when it starts and
 * its own after a restore: both are called "top".
 */
function shape(root: number): Shape[] {
  const stats = treeOf(root).map((pid) => parseStat(readFileSync(`/proc/${pid}/stat`, 'latin1')));
  const role = (pid: number): string => {
    const found = stats.find((s) => s.pid === pid);
    return !found || pid === root ? 'top' : found.comm.replace(/^tree-/, '');
  };
  return stats
    .map((s) => ({
      role: role(s.pid),
      state: s.state === 'Z' ? 'zombie' : 'live',
      parent: role(s.ppid),
      group: role(s.pgrp),
      session: role(s.session),
    }))
    .sort((a, b) => a.role.localeCompare(b.role));
}

const ROLES = ['parent', 'leader', 'member', 'group', 'joiner'];

async function startFixtureTree(d: string): Promise<number> {
  const pid = await startTree(d, PYTHON, [`${FIXTURE_SOURCES}/tree.py`, d]);
  await until('every process ticks', () => ROLES.every((r) => existsSync(`${d}/${r}`)));
  await until('the zombie has exited', () => shape(pid).some((s) => s.state === 'zombie'));
  process.kill(pid, 'SIGUSR1'); // blocked: it stays pending
  return pid;
}

/** Every process of the fixture ticks on past where it was. */
async function ticksOn(d: string): Promise<void> {
  const count = (r: string): number => Number(readFileSync(`${d}/${r}`, 'utf8'));
  const from = ROLES.map(count);
  await until('every process ticks on', () => ROLES.every((r, i) => count(r) > from[i]! + 5));
}

/** Ask the fixture's parent to reap its zombie and take its pending signal. */
async function report(d: string): Promise<string> {
  writeFileSync(`${d}/check`, '');
  return (await fileContent(`${d}/report`, /\n$/)).trim();
}

const EXPECTED_SHAPE: Shape[] = [
  { role: 'group', state: 'live', parent: 'top', group: 'group', session: 'top' },
  { role: 'joiner', state: 'live', parent: 'top', group: 'group', session: 'top' },
  { role: 'leader', state: 'live', parent: 'top', group: 'leader', session: 'leader' },
  { role: 'member', state: 'live', parent: 'leader', group: 'leader', session: 'leader' },
  { role: 'top', state: 'live', parent: 'top', group: 'top', session: 'top' },
  { role: 'zombie', state: 'zombie', parent: 'top', group: 'top', session: 'top' },
];

for (const samePid of ['require', 'no'] as const) {
  test(`a tree with a session, a process group, a zombie and a pending signal comes back whole (--same-pid ${samePid})`, async () => {
    const d = dir();
    const pid = await startFixtureTree(d);
    assert.deepEqual(shape(pid), EXPECTED_SHAPE);
    const image = await dumpTree(pid);
    const shown = await cliOk(['show', image]);
    assert.match(shown, /^a tree of 6 processes:$/m);
    assert.match(shown, /a zombie \(wait status 0x700\)/);
    const restored = await restoreTree(image, '--same-pid', samePid);
    assert.equal(restored === pid, samePid === 'require');
    assert.deepEqual(shape(restored), EXPECTED_SHAPE);
    await ticksOn(d);
    assert.equal(await report(d), `zombie 7 usr1 ${process.pid}`);
  });
}

test('--no-tree refuses a process with children, naming them, and the tree runs on', async () => {
  const d = dir();
  const pid = await startFixtureTree(d);
  const children = treeOf(pid).slice(1, 1 + 5);
  const r = await runCli(['dump', String(pid), '-D', dir(), '--no-tree']);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    new RegExp(`cannot checkpoint process ${pid}: it has child processes \\(${children[0]}, `),
  );
  assert.match(r.stderr, /--no-tree was given/);
  for (const p of treeOf(pid)) assert.equal(traceState(p).tracerPid, 0);
  await ticksOn(d);
  assert.equal(await report(d), `zombie 7 usr1 ${process.pid}`);
});

test('in a new PID namespace, whose session and group are led from outside it, a pipeline dumps and restores', async () => {
  const d = dir();
  // unshare kills the namespace's first process, and with it the namespace, if it is killed.
  const args = ['-p', '-f', '--mount-proc', '--kill-child', PYTHON, `${FIXTURE_SOURCES}/container.py`];
  const child = spawn('unshare', [...args, CLI, d], { detached: true });
  cleanup(() => killAndReap(child.pid!));
  let output = '';
  child.stdout.on('data', (b: Buffer) => (output += b.toString()));
  child.stderr.on('data', (b: Buffer) => (output += b.toString()));
  const code = await new Promise((resolve) => child.on('close', resolve));
  assert.equal(code, 0, output);
  assert.match(output, /^group 0 session 0$/m);
  assert.match(output, /^restored \d+ \(was \d+\), lines out of order \[\]$/m);
  const shown = JSON.parse(await cliOk(['show', `${d}/image`, '--json'])) as {
    manifest: { tree: { pgid: number; sid: number }[] };
  };
  assert.ok(shown.manifest.tree.length >= 3, 'sh, its loop and cat');
  for (const m of shown.manifest.tree) assert.deepEqual([m.pgid, m.sid], [0, 0]);
});
