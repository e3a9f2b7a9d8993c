// Every way a dump or restore can fail: a clear message, a non-zero exit, and nothing lost — the
// process left running (not stopped, not traced), no half-written image, no stray process.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readlinkSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { before, test } from 'node:test';
import { dump } from '../src/checkpoint.js';
import { isFerryError } from '../src/errors.js';
import { initHashing } from '../src/image/hash.js';
import { ioctl } from '../src/sys/ioctl.js';
import { IMAGE_VERSION, sealManifest } from '../src/image/manifest.js';
import { cleanupAfterAll, workDirs } from './helpers/cleanup.js';
import { fileContent } from './helpers/compute.js';
import { runCli, type CliResult } from './helpers/cli.js';
import { startOtherUserProcess, startProcess, traceState, WITHOUT_TRACE_CAPS } from './helpers/processes.js';
import { fixture } from './helpers/fixtures.js';
import { PYTHON } from './helpers/paths.js';
import { becomeSubreaper, descendants, killAndReap } from './helpers/reaper.js';
import { startStateFixture, type StateFixture } from './helpers/state-fixture.js';

const cleanup = cleanupAfterAll();
const { dir } = workDirs('ferry-err', cleanup);

before(async () => {
  becomeSubreaper();
  await initHashing();
});

async function started(): Promise<StateFixture> {
  const f = await startStateFixture(dir());
  cleanup(() => f.stop());
  return f;
}

/** A failed command: exit 1, one line on stderr matching `message`, no stack trace. */
function assertFailed(r: CliResult, message: RegExp): void {
  assert.equal(r.code, 1, r.stdout + r.stderr);
  // One line of error (after any warnings the dump gave on its way).
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.filter((l) => !l.startsWith('ferry: warning:')).length, 1, r.stderr);
  assert.match(r.stderr, message);
}

/** The process runs on: neither stopped nor traced, and it still passes its own checks. */
async function assertUntouched(f: StateFixture): Promise<void> {
  const { state, tracerPid } = traceState(f.pid);
  assert.ok(state !== 't' && state !== 'T', `state ${state}`);
  assert.equal(tracerPid, 0);
  assert.match(await f.verify(), /^PASS /);
}

/**
 * This test's own descendants (orphans come to it, a subreaper) named like a restore stub or the
 * fixture, which a failed restore must not leave. Other processes of the host are none of its business.
 */
function strays(names: RegExp): string[] {
  const found: string[] = [];
  for (const pid of descendants()) {
    try {
      const comm = readFileSync(`/proc/${pid}/comm`, 'latin1').trim();
      if (names.test(comm) && !/^Z/m.test(readFileSync(`/proc/${pid}/stat`, 'latin1').split(') ')[1] ?? ''))
        found.push(`${pid} ${comm}`);
    } catch {
      // gone
    }
  }
  return found;
}

test('dump of an unknown PID', async () => {
  assertFailed(await runCli(['dump', '4194304', '-D', dir()]), /^ferry: no process with PID 4194304/);
});

// On Linux 6.x CAP_SYS_ADMIN and CAP_PERFMON also grant reading another user's /proc files; the
// missing CAP_SYS_PTRACE is what forbids tracing.
test('dump of a process ferry may not trace leaves it untouched', async () => {
  const other = await startOtherUserProcess();
  cleanup(() => other.stop());
  const r = await runCli(['dump', String(other.pid), '-D', dir()], {
    wrap: WITHOUT_TRACE_CAPS,
  });
  assertFailed(r, new RegExp(`^ferry: may not trace process ${other.pid}`));
  const { state, tracerPid } = traceState(other.pid);
  assert.equal(tracerPid, 0);
  assert.equal(state, 'S');
});

test('a process that exits mid-dump: FERRY_PROCESS_EXITED, and no image', async () => {
  const f = await started();
  const image = dir();
  let killed = false;
  await assert.rejects(
    dump(f.pid, {
      dir: image,
      onProgress: () => {
        if (!killed) process.kill(f.pid, 'SIGKILL');
        killed = true;
      },
    }),
    (err: unknown) =>
      isFerryError(err, 'FERRY_PROCESS_EXITED') && err.message.includes('no image was written'),
  );
  assert.ok(killed);
  assert.deepEqual(readdirSync(image), [], 'no manifest, no partial directory');
  const leaked = readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith(image);
    } catch {
      return false;
    }
  });
  assert.deepEqual(leaked, [], 'no descriptor of the aborted image is left open');
});

test('dump onto a full disk: the process is left running, not stopped, not traced', async () => {
  const f = await started();
  const mount = dir();
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'ferry-test', mount]);
  cleanup(() => {
    execFileSync('umount', [mount]);
  });
  // The image directory is left as it was found: absent (made, then removed), or empty.
  for (const [i, mode] of [[], ['--leave-running']].entries()) {
    const image = `${mount}/image${i}`;
    if (i === 1) mkdirSync(image);
    assertFailed(
      await runCli(['dump', String(f.pid), '-D', image, ...mode]),
      /^ferry: cannot write .*: no space left on device/,
    );
    assert.deepEqual(readdirSync(mount), i === 1 ? ['image1'] : []);
    if (i === 1) assert.deepEqual(readdirSync(image), []);
    await assertUntouched(f);
  }
});

/** A fresh copy of a good image, to damage. */
function imageCopy(base: string): string {
  const copy = dir();
  execFileSync('cp', ['-r', `${base}/.`, copy]);
  return copy;
}

function editManifest(image: string, edit: (m: Record<string, unknown>) => void, reseal: boolean): void {
  const path = `${image}/manifest.json`;
  const manifest = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  edit(manifest);
  if (reseal) {
    delete manifest.checksum;
    writeFileSync(path, sealManifest(manifest).text);
  } else {
    writeFileSync(path, JSON.stringify(manifest, null, 1));
  }
}

test('damaged images are refused before anything is spawned', async () => {
  const f = await started();
  const good = dir();
  const r = await runCli(['dump', String(f.pid), '-D', good, '--leave-running']);
  assert.equal(r.code, 0, r.stderr);
  const cases: [string, (image: string) => void, RegExp][] = [
    [
      'a flipped bit in the page data',
      (image) => {
        const pages = readFileSync(`${image}/pages.img`);
        pages[pages.length >> 1]! ^= 0x01;
        writeFileSync(`${image}/pages.img`, pages);
      },
      /pages\.img does not match its checksum/,
    ],
    [
      'a truncated page index',
      (image) => truncateSync(`${image}/pagemap.img`, 40),
      /pagemap\.img is 40 bytes, the manifest says \d+/,
    ],
    ['a missing part', (image) => unlinkSync(`${image}/pages.img`), /pages\.img is missing/],
    [
      'an edited manifest',
      (image) => editManifest(image, (m) => ((m.state as { pid: number }).pid += 1), false),
      /manifest\.json does not match its checksum: it was edited or damaged/,
    ],
    [
      'a manifest that is not JSON',
      (image) => writeFileSync(`${image}/manifest.json`, '{"format": "ferry-ima'),
      /is not JSON/,
    ],
    ['no image at all', (image) => rmSync(`${image}/manifest.json`), /holds no ferry image/],
    [
      'a newer format',
      (image) => editManifest(image, (m) => (m.version = 99), true),
      new RegExp(`is an image of format version 99; this ferry reads version ${IMAGE_VERSION}`),
    ],
    [
      'a manifest that breaks the schema',
      (image) => editManifest(image, (m) => ((m.state as { threads: unknown[] }).threads = []), true),
      /manifest\.state\.threads must be an array of 1 to 32768 items, not \[\]/,
    ],
  ];
  for (const [what, damage, message] of cases) {
    const image = imageCopy(good);
    damage(image);
    for (const command of [
      ['restore', '-D', image],
      ['show', image],
    ]) {
      const res = await runCli(command);
      assert.equal(res.code, 1, `${what}: ${res.stdout}`);
      assert.match(res.stderr, message, what);
    }
    assert.deepEqual(strays(/^ferry-restore$/), [], what);
  }
});

/** The lowest xsave component above AVX that the CPU an image was made on does not have. */
function lackedXfeature(m: Record<string, unknown>): bigint {
  const has = BigInt((m.host as { xfeatures: string }).xfeatures);
  for (let bit = 3n; bit < 63n; bit++) if ((has & (1n << bit)) === 0n) return bit;
  throw new Error(`the CPU has every xsave component: ${has.toString(16)}`);
}

test('an image from another kernel or another CPU is refused with the reason', async () => {
  const f = await started();
  const good = dir();
  assert.equal((await runCli(['dump', String(f.pid), '-D', good, '--leave-running'])).code, 0);
  const kernel = imageCopy(good);
  editManifest(kernel, (m) => ((m.host as { kernel: string }).kernel = '5.10.0-old'), true);
  assertFailed(
    await runCli(['restore', '-D', kernel]),
    /was made on Linux 5\.10\.0-old and this is Linux \S+: restore needs the same kernel/,
  );

  const cpu = imageCopy(good);
  editManifest(
    cpu,
    (m) => {
      const thread = (m.state as { threads: { xstate: string }[] }).threads[0]!;
      const xstate = Buffer.from(thread.xstate, 'base64');
      // Claim a user component in use that this CPU's XCR0 (the image was made here) lacks; bit 8
      // (processor trace) is a supervisor component no XCR0 ever holds, whatever the CPU.
      xstate.writeBigUInt64LE(xstate.readBigUInt64LE(512) | (1n << lackedXfeature(m)), 512);
      thread.xstate = xstate.toString('base64');
    },
    true,
  );
  assertFailed(
    await runCli(['restore', '-D', cpu]),
    /holds CPU state this CPU lacks \(xfeatures 0x[0-9a-f]+; this CPU has 0x[0-9a-f]+/,
  );
  assert.deepEqual(strays(/^ferry-restore$/), []);
  await assertUntouched(f);
});

test('a restore that fails midway kills its stub and leaves nothing behind', async () => {
  const f = await started();
  const image = dir();
  assert.equal((await runCli(['dump', String(f.pid), '-D', image])).code, 0);
  // The process had its data file open: without the file, restore cannot give it back.
  unlinkSync(f.data);
  mkdirSync(f.data);
  const r = await runCli(['restore', '-D', image]);
  assertFailed(
    r,
    /^ferry: restore of .* failed: open\(.*\/data\) in process \d+.*: EISDIR .*; the new process was killed/,
  );
  assert.deepEqual(strays(/^ferry-restore$/), []);
  assert.ok(!existsSync(`/proc/${f.pid}`), 'no process under the original PID');
});

test('a restore whose last step the kernel refuses kills the new process, as it says', async () => {
  const f = await started();
  const image = dir();
  assert.equal((await runCli(['dump', String(f.pid), '-D', image])).code, 0);
  // An fs_base above the user address space: PTRACE_SETREGSET refuses it as the process is let go.
  editManifest(
    image,
    (m) => {
      const thread = (m.state as { threads: { regs: Record<string, string> }[] }).threads[0]!;
      thread.regs.fs_base = '0x8000000000000000';
    },
    true,
  );
  const r = await runCli(['restore', '-D', image]);
  assertFailed(r, /the new process was killed/);
  assert.deepEqual(strays(/^ferry-restore$/), []);
  assert.ok(!existsSync(`/proc/${f.pid}`), 'no process under the original PID');
});

/** Maps the file argv[1] names and 16 MiB of private memory it fills, writes argv[2], then waits. */
const MAPS_A_FILE = `
import mmap, os, sys, time
with open(sys.argv[1], 'wb') as f:
    f.write(b'x' * 4096)
with open(sys.argv[1], 'rb') as f:
    mapped = mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ)
big = mmap.mmap(-1, 16 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
big.write(os.urandom(16 << 20))
open(sys.argv[2], 'w').close()
while True:
    time.sleep(0.05)
`;

test('a restore that fails while its pages are copied in kills its stub and leaves nothing behind', async () => {
  // The 16 MiB begin to be copied in before the rest of the layout, which fails at the file.
  const work = dir();
  const child = spawn(PYTHON, ['-c', MAPS_A_FILE, `${work}/mapped`, `${work}/ready`], { stdio: 'ignore' });
  const pid = child.pid!;
  child.unref();
  cleanup(() => killAndReap(pid));
  await fileContent(`${work}/ready`);
  const image = dir();
  assert.equal((await runCli(['dump', String(pid), '-D', image])).code, 0);
  unlinkSync(`${work}/mapped`);
  assertFailed(
    await runCli(['restore', '-D', image]),
    /^ferry: restore of .* failed: open\(.*\/mapped\) in process \d+.*: ENOENT .*; the new process was killed/,
  );
  assert.deepEqual(strays(/^ferry-restore$/), []);
  assert.ok(!existsSync(`/proc/${pid}`), 'no process under the original PID');
});

/** Installs a seccomp filter that allows everything, then waits. */
const UNDER_SECCOMP = `
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
allow = (ctypes.c_ubyte * 8).from_buffer_copy(bytes([6, 0, 0, 0, 0, 0, 0xff, 0x7f]))  # BPF_RET|BPF_K ALLOW
class Prog(ctypes.Structure):
    _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.c_void_p)]
prog = Prog(1, ctypes.addressof(allow))
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
print('READY', flush=True)
while True:
    time.sleep(0.05)
`;

test('seccomp: filtered and strict processes dump, held with seccomp suspended, and come back in their mode', async () => {
  const free = (pid: number): void => {
    const { state, tracerPid } = traceState(pid);
    assert.ok(state !== 't' && state !== 'T', `state ${state}`);
    assert.equal(tracerPid, 0);
  };
  const seccomp = (pid: number): string =>
    /^Seccomp:\s+(\d)$/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))![1]!;
  // Its filters are suspended while ferry holds it, and saved (test/conformance: seccomp restores them).
  const filtered = await startProcess(PYTHON, ['-c', UNDER_SECCOMP]);
  cleanup(() => void filtered.stop());
  const r = await runCli(['dump', String(filtered.pid), '-D', dir(), '--leave-running']);
  assert.equal(r.code, 0, r.stderr);
  free(filtered.pid);
  assert.equal(seccomp(filtered.pid), '2');
  // Strict mode kills a process at its first call but read, write, exit and sigreturn: ferry's own
  // calls inside it are not checked while it holds it, and it comes back in strict mode, reading on.
  const work = dir();
  const fifo = `${work}/in`;
  execFileSync('mkfifo', [fifo]);
  const writer = openSync(fifo, 'r+');
  cleanup(() => closeSync(writer));
  const out = openSync(`${work}/out`, 'w');
  const strict = spawn(fixture('strict'), [], { stdio: [writer, out, out] });
  closeSync(out);
  cleanup(() => killAndReap(strict.pid!));
  await fileContent(`${work}/out`, /^READY \d+\n/);
  while (seccomp(strict.pid!) !== '1') await new Promise((resolve) => setTimeout(resolve, 10));
  const image = dir();
  const dumped = await runCli(['dump', String(strict.pid), '-D', image]);
  assert.equal(dumped.code, 0, dumped.stderr);
  const restored = await runCli(['restore', '-D', image, '--same-pid', 'no']);
  assert.equal(restored.code, 0, restored.stderr);
  const pid = Number(restored.stdout.trim());
  cleanup(() => killAndReap(pid));
  assert.equal(seccomp(pid), '1', 'strict mode again');
  writeSync(writer, 'abc');
  const queued = new Int32Array(1);
  for (const until = Date.now() + 5000; Date.now() < until; await new Promise((r) => setTimeout(r, 10))) {
    ioctl(writer, 0x541b, 'FIONREAD', queued);
    if (queued[0] === 0) break;
  }
  assert.equal(queued[0], 0, 'it read what was written');
  free(pid);
});
