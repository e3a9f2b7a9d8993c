// inspect on real processes: the C fixture whose pages are known exactly, and python3.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { after, before, test } from 'node:test';
import { isFerryError } from '../src/errors.js';
import { inspect, type InspectResult, type VmaReport } from '../src/inspect.js';
import { parseMaps } from '../src/proc/maps.js';
import { fixture } from './helpers/fixtures.js';
import { kernelThread, processState, startProcess, type Started } from './helpers/processes.js';
import { PYTHON } from './helpers/paths.js';

const HALF_OF_64_MIB = 8192;
const started: Started[] = [];
let scratch: string;
let vmas: Started;
let addr: Record<string, bigint>;

before(async () => {
  scratch = mkdtempSync(`${tmpdir()}/ferry-inspect-`);
  vmas = await startProcess(fixture('vmas'), [scratch]);
  started.push(vmas);
  addr = Object.fromEntries(
    Object.entries(JSON.parse(vmas.readyLine) as Record<string, string>).map(([k, v]) => [k, BigInt(v)]),
  );
});

after(async () => {
  for (const p of started) await p.stop();
  rmSync(scratch, { recursive: true, force: true });
});

const vmaAt = (r: InspectResult, a: bigint): VmaReport => {
  const v = r.vmas.find((x) => x.start <= a && a < x.end);
  assert.ok(v, `a VMA holds 0x${a.toString(16)}`);
  return v;
};

/** inspect's VMA list against /proc/PID/maps, field by field and line by line. */
function assertMatchesMaps(r: InspectResult, pid: number): void {
  const maps = parseMaps(readFileSync(`/proc/${pid}/maps`, 'latin1'));
  const fromInspect = r.vmas.map((v) => ({
    start: v.start,
    end: v.end,
    perms: v.perms,
    offset: v.offset,
    dev: v.dev,
    inode: v.inode,
    name: v.deleted ? `${v.name} (deleted)` : v.name,
  }));
  assert.deepEqual(fromInspect, maps);
}

for (const method of ['pagemap-scan', 'pagemap'] as const) {
  test(`the C fixture, scanned with ${method}: VMAs equal maps, page counts equal what it touched`, () => {
    const r = inspect(vmas.pid, { scanMethod: method });
    assert.equal(r.scanMethod, method);
    assert.equal(r.pid, vmas.pid);
    assert.equal(r.threads, 2);
    assertMatchesMaps(r, vmas.pid);

    const anon = vmaAt(r, addr.anon!);
    assert.equal(anon.kind, 'anon');
    assert.equal(anon.end - anon.start, 64n << 20n);
    assert.deepEqual(anon.pages, {
      resident: HALF_OF_64_MIB,
      swapped: 0,
      anon: HALF_OF_64_MIB,
      file: 0,
      zero: 0,
      huge: 0,
      dump: HALF_OF_64_MIB,
    });

    const priv = vmaAt(r, addr.privateFile!);
    assert.equal(priv.kind, 'file-private');
    assert.equal(priv.pages.anon, 2, 'pages 4 and 5 were copied on write');
    assert.equal(priv.pages.dump, 2);
    assert.ok(priv.pages.file >= 4, 'pages 0-3 were read');

    const shared = vmaAt(r, addr.sharedFile!);
    assert.equal(shared.kind, 'file-shared');
    assert.ok(shared.pages.file >= 3);
    assert.equal(shared.pages.dump, 0, 'a shared file keeps its own content');

    const shanon = vmaAt(r, addr.sharedAnon!);
    assert.equal(shanon.kind, 'anon-shared');
    assert.equal(shanon.pages.resident, 4);
    assert.equal(shanon.pages.dump, 4);

    const guard = vmaAt(r, addr.guard!);
    assert.equal(guard.kind, 'guard');
    assert.equal(guard.perms, '---p');
    assert.equal(guard.pages.resident, 0);

    const zero = vmaAt(r, addr.zero!);
    assert.equal(zero.pages.resident, 4);
    assert.equal(zero.pages.zero, 4, 'read-only touched pages map the zero page');
    assert.equal(zero.pages.dump, 0, 'zero pages are not stored');

    assert.equal(vmaAt(r, addr.threadStack!).kind, 'stack');
    assert.ok(r.vmas.some((v) => v.kind === 'text' && v.name.includes('vmas-')));
    assert.ok(r.vmas.some((v) => v.kind === 'heap'));
    assert.ok(r.vmas.some((v) => v.kind === 'vdso'));
    const sum = r.vmas.reduce((n, v) => n + v.pages.dump, 0);
    assert.equal(r.totals.pages.dump, sum);
    assert.equal(r.checkpointBytes, sum * 4096);
  });
}

test('both scan methods agree page for page', () => {
  const a = inspect(vmas.pid, { scanMethod: 'pagemap-scan' });
  const b = inspect(vmas.pid, { scanMethod: 'pagemap' });
  assert.deepEqual(
    a.vmas.map((v) => v.pages),
    b.vmas.map((v) => v.pages),
  );
});

test('--vmas narrows the report to the selected VMAs', () => {
  const r = inspect(vmas.pid, { vmas: `heap,0x${addr.anon!.toString(16)}` });
  assert.deepEqual(
    r.vmas.map((v) => v.kind),
    ['heap', 'anon'],
  );
  assert.equal(r.totals.vmas, 2);
  assert.equal(r.selection, `heap,0x${addr.anon!.toString(16)}`);
  const noAnon = inspect(vmas.pid, { vmas: 'all,!anon' });
  assert.ok(!noAnon.vmas.some((v) => v.kind === 'anon'));
});

test('python3: VMAs equal maps; a 32 MiB bytearray is resident and would be dumped', async () => {
  const py = await startProcess(PYTHON, [
    '-c',
    "import sys\nx = bytearray(b'\\x01') * (32 << 20)\nprint('READY', flush=True)\nsys.stdin.read()",
  ]);
  started.push(py);
  const r = inspect(py.pid);
  assertMatchesMaps(r, py.pid);
  assert.match(r.exe, /python3/);
  const big = r.vmas.find((v) => v.kind === 'anon' && v.pages.dump >= 8192);
  assert.ok(big, 'the bytearray VMA');
  assert.ok(r.vmas.some((v) => v.kind === 'text' && v.name.includes('python3')));
  assert.ok(r.checkpointBytes >= 32 << 20);
});

test('errors: unknown PID, kernel thread, zombie, bad spec', async () => {
  assert.throws(
    () => inspect(4194305),
    (e: unknown) => isFerryError(e, 'FERRY_NO_SUCH_PROCESS'),
  );
  const kthread = kernelThread();
  if (kthread !== undefined)
    assert.throws(
      () => inspect(kthread),
      (e: unknown) => isFerryError(e, 'FERRY_KERNEL_THREAD'),
    );
  const parent = await startProcess(PYTHON, [
    '-c',
    'import os,sys\npid = os.fork()\nif pid == 0: os._exit(0)\nprint(pid, flush=True)\nsys.stdin.read()',
  ]);
  started.push(parent);
  const zombie = Number(parent.readyLine);
  for (let i = 0; i < 100 && processState(zombie) !== 'Z'; i++) await new Promise((r) => setTimeout(r, 10));
  assert.throws(
    () => inspect(zombie),
    (e: unknown) => isFerryError(e, 'FERRY_ZOMBIE'),
  );
  assert.throws(
    () => inspect(vmas.pid, { vmas: 'heap,nope' }),
    (e: unknown) => isFerryError(e, 'FERRY_BAD_VMA_SPEC'),
  );
});

test('a process that exits while being inspected gives FERRY_PROCESS_EXITED', async () => {
  const victim = await startProcess(fixture('vmas'), [scratch]);
  started.push(victim);
  let killed = false;
  assert.throws(
    () =>
      inspect(victim.pid, {
        onProgress: () => {
          if (killed) return;
          killed = true;
          process.kill(victim.pid, 'SIGKILL');
          // It stays a zombie until this (busy) process reaps it: wait until it has died.
          while (processState(victim.pid) !== 'Z');
        },
      }),
    (e: unknown) => isFerryError(e, 'FERRY_PROCESS_EXITED') && e.message.includes(String(victim.pid)),
  );
  assert.ok(killed);
});
