// Checkpoint and restore of real processes through the ferry CLI: the C fixture that verifies its
// own state, python3 computations, partial and compressed images, `show`.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { before, test } from 'node:test';
import { dump } from '../src/checkpoint.js';
import { hashBytes } from '../src/image/hash.js';
import { sealManifest } from '../src/image/manifest.js';
import { readImage } from '../src/read-image.js';
import { cleanupAfterAll, workDirs } from './helpers/cleanup.js';
import { cliOk, restoreCli, runCli } from './helpers/cli.js';
import { compute, fileContent } from './helpers/compute.js';
import { CLI, PYTHON } from './helpers/paths.js';
import { startProcess, traceState } from './helpers/processes.js';
import { becomeSubreaper, killAndReap } from './helpers/reaper.js';
import { startStateFixture, visibleState, type StateFixture } from './helpers/state-fixture.js';

const cleanup = cleanupAfterAll();
const { dir } = workDirs('ferry-cr', cleanup);

before(() => becomeSubreaper());

async function started(): Promise<StateFixture> {
  const f = await startStateFixture(dir());
  cleanup(() => f.stop());
  return f;
}

const cli = cliOk;
const restored = (image: string, ...extra: string[]): Promise<number> => restoreCli(image, cleanup, ...extra);

test('dump, kill, restore under the same PID: the process finds its state intact, /proc shows the same', async () => {
  const f = await started();
  assert.match(await f.verify(), /^PASS 1 scratch=ab$/);
  const before = visibleState(f.pid);
  const image = dir();
  const out = await cli(['dump', String(f.pid), '-D', image]);
  assert.match(
    out,
    new RegExp(`^dumped ${f.pid} to ${image}: frozen [0-9.]+ ms, .* written, \\d+ pages .* VMAs; killed\\n$`),
  );
  const pid = await restored(image, '--same-pid', 'require');
  assert.equal(pid, f.pid);
  assert.deepEqual(visibleState(pid), before);
  assert.match(await f.verify(pid), /^PASS 2 scratch=ab$/, 'the counter carried on from 1');
  assert.match(await f.verify(pid), /^PASS 3 /);
});

test('--leave-running keeps the original; a copy restored under a new PID passes too', async () => {
  const f = await started();
  const image = dir();
  assert.match(await cli(['dump', String(f.pid), '-D', image, '--leave-running']), /left running\n$/);
  const pidfile = `${image}.pid`;
  const pid = await restored(image, '--same-pid', 'no', '--pidfile', pidfile);
  assert.notEqual(pid, f.pid);
  assert.equal(readFileSync(pidfile, 'utf8'), `${pid}\n`);
  assert.deepEqual(visibleState(pid).maps, visibleState(f.pid).maps);
  assert.match(await f.verify(), /^PASS 1 /);
  assert.match(await f.verify(pid), /^PASS 1 /, 'the copy counts on its own, from the dumped counter');
});

test('an image of format 4 (each part one XXH3-64) restores; a flipped bit in it is still found', async () => {
  const f = await started();
  const image = dir();
  await cli(['dump', String(f.pid), '-D', image, '--leave-running']);
  // The image as version 4 wrote it: the same parts, each summed whole.
  const path = `${image}/manifest.json`;
  const manifest = JSON.parse(readFileSync(path, 'utf8')) as {
    version: number;
    checksum?: string;
    parts: Record<string, { checksum: string }>;
  };
  manifest.version = 4;
  for (const [name, part] of Object.entries(manifest.parts))
    part.checksum = hashBytes(readFileSync(`${image}/${name}`), 'xxh3');
  delete manifest.checksum;
  writeFileSync(path, sealManifest(manifest).text);
  const pid = await restored(image, '--same-pid', 'no');
  assert.match(await f.verify(pid), /^PASS 1 /);
  const pages = readFileSync(`${image}/pages.img`);
  pages[pages.length >> 1]! ^= 0x01;
  writeFileSync(`${image}/pages.img`, pages);
  const r = await runCli(['restore', '-D', image, '--same-pid', 'no']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /pages\.img does not match its checksum/);
});

test('--same-pid require refuses a PID in use, and leaves nothing behind', async () => {
  const f = await started();
  const image = dir();
  await cli(['dump', String(f.pid), '-D', image, '--leave-running']);
  const r = await runCli(['restore', '-D', image, '--same-pid', 'require']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`^ferry: cannot restore under PID ${f.pid}: it belongs to state-`));
  assert.match(await f.verify(), /^PASS 1 /);
});

test('a partial dump keeps the layout of VMAs outside --vmas; it restores only --stopped, those zero-filled', async () => {
  const f = await started();
  const image = dir();
  const spec = `all,!0x${f.scratch.toString(16)}`;
  await cli(['dump', String(f.pid), '-D', image, '--vmas', spec]);
  const shown = await cli(['show', image]);
  assert.match(
    shown,
    new RegExp(`partial dump: pages stored only for VMAs matching "${spec.replace(/[!]/g, '\\$&')}"`),
  );
  assert.match(
    shown,
    new RegExp(`^${f.scratch.toString(16)}\\s+\\S+\\s+1\\.0 MiB\\s+rw-p\\s+anon\\s+layout only`, 'm'),
  );
  const refused = await runCli(['restore', '-D', image]);
  assert.equal(refused.code, 1);
  assert.match(
    refused.stderr,
    new RegExp(
      `would run without the contents of 0x${f.scratch.toString(16)}-0x[0-9a-f]+ \\(anon\\)\\. Restore it --stopped to look at it`,
    ),
  );
  const pid = await restored(image, '--stopped');
  assert.equal(traceState(pid).state, 'T', 'stopped, for inspection');
  process.kill(pid, 'SIGCONT');
  assert.match(await f.verify(pid), /^PASS 1 scratch=00$/);
});

test('--compress: a smaller image that restores the same', async () => {
  const f = await started();
  const plain = dir();
  const packed = dir();
  const json = JSON.parse(
    await cli(['dump', String(f.pid), '-D', packed, '--compress', '--leave-running', '--json']),
  ) as { bytesWritten: number };
  await cli(['dump', String(f.pid), '-D', plain]);
  const plainJson = JSON.parse(await cli(['show', plain, '--json'])) as {
    manifest: { parts: Record<string, { size: number }> };
  };
  assert.ok(
    json.bytesWritten < plainJson.manifest.parts['pages.img']!.size,
    'the random buffer does not compress, the rest does',
  );
  const pid = await restored(packed);
  assert.match(await f.verify(pid), /^PASS 1 /);
});

test('show: the image in words and JSON; --raw gives one VMA exactly as the process had it', async () => {
  const f = await started();
  const image = dir();
  await cli(['dump', String(f.pid), '-D', image, '--leave-running', '--vmas', 'heap']);
  const text = await cli(['show', image]);
  assert.match(text, new RegExp(`^image ${image}: process ${f.pid} \\(state-`));
  assert.match(text, /^\S+\s+\S+\s+\S+ \S+\s+rw-p\s+heap\s+\d+ pages\s+\[heap\]$/m);
  assert.match(text, /^4\s+file\s+\S+\s+\S+\/data @4113$/m);
  const json = JSON.parse(await cli(['show', image, '--json', '--vma', '[heap]'])) as {
    stored: { storedPages: number }[];
  };
  assert.equal(json.stored.length, 1);
  const heap = readFileSync(`/proc/${f.pid}/maps`, 'latin1')
    .split('\n')
    .find((l) => l.endsWith('[heap]'))!;
  const [start, end] = heap
    .split(' ')[0]!
    .split('-')
    .map((h) => Number(`0x${h}`));
  const raw = await new Promise<Buffer>((resolve, reject) => {
    const child = spawn(CLI, [
      'show',
      image,
      '--vma',
      'heap', // a kind names the one VMA of that kind
      '--raw',
    ]);
    const chunks: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.on('error', reject);
    child.on('close', () => resolve(Buffer.concat(chunks)));
  });
  const live = Buffer.alloc(end! - start!);
  const mem = openSync(`/proc/${f.pid}/mem`, 'r');
  readSync(mem, live, 0, live.length, start!);
  closeSync(mem);
  assert.equal(raw.length, live.length);
  assert.ok(raw.equals(live), 'the snapshot of the idle process equals its live heap');
});

const HASH = /^[0-9a-f]{64}$/;
const ROUNDS = 4_000_000;
let expected: string;

test('python3: an uninterrupted run, for reference', async () => {
  const out = `${dir()}/result`;
  await compute(out, ROUNDS, cleanup).done;
  expected = readFileSync(out, 'utf8');
  assert.match(expected, HASH);
});

test('python3 checkpointed midway and restored finishes with the same result', async () => {
  const out = `${dir()}/result`;
  const run = compute(out, ROUNDS, cleanup);
  await fileContent(`${out}.started`);
  const image = dir();
  await cli(['dump', String(run.pid), '-D', image]);
  await run.done;
  const pid = await restored(image);
  assert.equal(await fileContent(out, HASH), expected);
  killAndReap(pid);
});

test('python3 dumped with --leave-running 20 times in a row finishes as if undisturbed', async () => {
  const out = `${dir()}/result`;
  const run = compute(out, ROUNDS, cleanup);
  await fileContent(`${out}.started`);
  const image = dir();
  for (let i = 0; i < 20; i++) {
    const r = await dump(run.pid, { dir: image, leaveRunning: true });
    assert.ok(r.pages > 0 && r.leftRunning);
  }
  // Each dump replaced the one before: one image, nothing hidden left over.
  const entries = readdirSync(image);
  assert.ok(entries.includes('manifest.json'), entries.join(' '));
  assert.deepEqual(
    entries.filter((e) => e.startsWith('.')),
    [],
  );
  await readImage(image);
  await run.done;
  assert.equal(readFileSync(out, 'utf8'), expected);
});

const DELETED_FILES = `
import mmap, os, signal, sys
os.closerange(3, 65536)
d = sys.argv[1]
with open(d + '/mapped', 'wb') as f:
    f.write(bytes(range(256)) * 64)
f = open(d + '/mapped', 'r+b')
m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE)
m[0:5] = b'HELLO'
g = open(d + '/open', 'w+')
g.write('still here')
g.flush()
f.close()
os.unlink(d + '/mapped')
os.unlink(d + '/open')
def check(*_):
    g.seek(0)
    ok = m[0:5] == b'HELLO' and m[5:256] == bytes(range(5, 256)) and m[4096:8192] == bytes(range(256)) * 16 and g.read() == 'still here'
    open(d + '/result', 'w').write('PASS' if ok else 'FAIL')
signal.signal(signal.SIGUSR1, check)
open(d + '/ready', 'w').close()
while True:
    signal.pause()
`;

test('a deleted file, mapped privately and open, comes back with its content', async () => {
  const work = dir();
  const child = spawn(PYTHON, ['-c', DELETED_FILES, work], { stdio: 'ignore' });
  child.unref(); // reaped by killAndReap, which Node's handle would wait for in vain
  cleanup(() => killAndReap(child.pid!));
  await fileContent(`${work}/ready`);
  const image = dir();
  await cli(['dump', String(child.pid), '-D', image]);
  const shown = await cli(['show', image]);
  assert.match(shown, /deleted-file\s+\d+ pages\s+\S+\/mapped \(deleted\)$/m);
  assert.match(shown, /^\d+\s+file\s+\S+\s+\S+\/open @10 \(deleted, 10 bytes saved\)$/m);
  const pid = await restored(image);
  assert.match(
    readFileSync(`/proc/${pid}/maps`, 'latin1'),
    /\/mapped \(deleted\)$/m,
    'the ghost file is gone again',
  );
  process.kill(pid, 'SIGUSR1');
  assert.equal(await fileContent(`${work}/result`, /^(PASS|FAIL)$/), 'PASS');
});

const DELETED_WITH_DIR = `
import os, sys, time
os.closerange(3, 65536)
d = sys.argv[1]
os.makedirs(d + '/gone')
f = open(d + '/gone/open', 'w+')
f.write('still here')
os.unlink(d + '/gone/open')
os.rmdir(d + '/gone')
open(d + '/ready', 'w').close()
while not os.path.exists(d + '/go'):
    time.sleep(0.01)
f.seek(0)
open(d + '/result', 'w').write(f.read())
`;

test('a deleted file whose directory is gone too comes back', async () => {
  const work = dir();
  const child = spawn(PYTHON, ['-c', DELETED_WITH_DIR, work], { stdio: 'ignore' });
  child.unref(); // reaped by killAndReap, which Node's handle would wait for in vain
  cleanup(() => killAndReap(child.pid!));
  await fileContent(`${work}/ready`);
  const image = dir();
  await cli(['dump', String(child.pid), '-D', image]);
  await restored(image);
  writeFileSync(`${work}/go`, '');
  assert.equal(await fileContent(`${work}/result`, /here$/), 'still here');
});

test('ferry demo: the built-in workload carries on after its restore', async () => {
  const text = await runCli(['demo']);
  assert.equal(text.code, 0, text.stdout + text.stderr);
  assert.match(text.stdout, /^restored it as \d+, the same PID, in [0-9.]+ ms$/m);
  assert.match(text.stdout, /it carried on from \d+: the demo passed\n$/);
  const json = JSON.parse(await cli(['demo', '--json'])) as {
    passed: boolean;
    after: number[];
    stoppedAt: number;
  };
  assert.equal(json.passed, true);
  assert.equal(json.after[0], json.stoppedAt + 1);
});

// An unprivileged process with a capability of its own (inheritable and ambient), a reduced
// bounding set and no_new_privs: restore gives it back exactly these credentials.
const CREDS_WORKLOAD = `
import os, time
os.closerange(3, 65536)
print('READY', flush=True)
null = os.open('/dev/null', os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
os.close(null)
time.sleep(600)
`;

const credLines = (pid: number): string[] =>
  readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .filter((l) => /^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):/.test(l));

test('credentials: uids, gids, capability sets, ambient caps and no_new_privs come back', async () => {
  const p = await startProcess('setpriv', [
    '--reuid=65534',
    '--regid=65534',
    '--groups=65534,100',
    '--inh-caps=+net_bind_service',
    '--ambient-caps=+net_bind_service',
    '--bounding-set=-sys_admin,-sys_ptrace',
    '--no-new-privs',
    PYTHON,
    '-c',
    CREDS_WORKLOAD,
  ]);
  cleanup(() => p.stop());
  const before = credLines(p.pid);
  assert.ok(
    before.some((l) => /^CapAmb:\s+0*400$/.test(l)),
    before.join('\n'),
  );
  assert.ok(before.includes('NoNewPrivs:\t1'), before.join('\n'));
  const image = dir();
  // Through the CLI: this process started it, and libuv would reap its ptrace stops.
  await cli(['dump', String(p.pid), '-D', image]);
  await p.stop();
  const pid = await restored(image, '--same-pid', 'no');
  assert.deepEqual(credLines(pid), before);
});
