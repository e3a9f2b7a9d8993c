// VMA advice and locks through dump and restore: every VMA of the restored process has the
// madvise flags and the mlock it had (smaps VmFlags), and its content.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { before, test } from 'node:test';
import { cleanupAfterAll, workDirs } from './helpers/cleanup.js';
import { cliOk, restoreCli } from './helpers/cli.js';
import { fileContent } from './helpers/compute.js';
import { PYTHON } from './helpers/paths.js';
import { startLogged } from './helpers/processes.js';
import { becomeSubreaper } from './helpers/reaper.js';
import { startSelfChecking } from './helpers/self-check.js';

const cleanup = cleanupAfterAll();
const { dir } = workDirs('ferry-memory', cleanup);

before(() => becomeSubreaper());

const ADVISED = `
import ctypes, mmap, os, sys, time
os.closerange(3, 65536)
libc = ctypes.CDLL(None, use_errno=True)
regions = []
for advice in (mmap.MADV_DONTDUMP, mmap.MADV_DONTFORK, mmap.MADV_HUGEPAGE, mmap.MADV_RANDOM, None):
    m = mmap.mmap(-1, 4 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m[:5] = b'ferry'
    if advice is None:
        assert libc.mlock(ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(m))), ctypes.c_size_t(len(m))) == 0
    else:
        m.madvise(advice)
    regions.append(m)
print('READY', ' '.join(hex(ctypes.addressof(ctypes.c_char.from_buffer(m))) for m in regions), flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
print('CHECK', 'ok' if all(m[:5] == b'ferry' for m in regions) else 'bad', flush=True)
`;

/** The advice and lock flags (smaps VmFlags) of the VMA starting at each address. */
function adviceOf(pid: number, starts: string[]): string[][] {
  const smaps = readFileSync(`/proc/${pid}/smaps`, 'latin1');
  return starts.map((start) => {
    const at = smaps.indexOf(`${start.replace(/^0x/, '')}-`);
    const flags = /^VmFlags: (.*)$/m.exec(smaps.slice(at))?.[1] ?? '';
    return flags.split(' ').filter((f) => ['dd', 'dc', 'hg', 'rr', 'lo'].includes(f));
  });
}

test('madvise flags and mlock of every VMA come back', async () => {
  const out = `${dir()}/out`;
  const go = `${dir()}/go`;
  const pid = await startLogged(out, PYTHON, ['-c', ADVISED, go], /^READY .*\n/m, cleanup);
  const starts = /^READY (.*)$/m.exec(readFileSync(out, 'utf8'))![1]!.split(' ');
  const before = adviceOf(pid, starts);
  assert.deepEqual(before, [['dd'], ['dc'], ['hg'], ['rr'], ['lo']]);
  const image = dir();
  await cliOk(['dump', String(pid), '-D', image]);
  const restored = await restoreCli(image, cleanup);
  assert.deepEqual(adviceOf(restored, starts), before);
  writeFileSync(go, '');
  assert.match(await fileContent(out, /^CHECK .*\n/m), /^CHECK ok$/m);
});

/** Each VMA's start and VmFlags, as smaps shows them. */
function vmFlags(pid: number): string[] {
  const smaps = readFileSync(`/proc/${pid}/smaps`, 'latin1');
  return [...smaps.matchAll(/^([0-9a-f]+)-[0-9a-f]+ [\s\S]*?^VmFlags: (.*)$/gm)].map(
    (m) => `${m[1]} ${m[2]!.trim()}`,
  );
}

test('64 MiB of random memory comes back byte for byte through UFFDIO_COPY, no VMA left registered', async () => {
  const m = await startSelfChecking(dir(), 'memload', ['64', 'random'], cleanup);
  const before = vmFlags(m.pid);
  const image = dir();
  await cliOk(['dump', String(m.pid), '-D', image]);
  const pid = await restoreCli(image, cleanup, '--same-pid', 'require');
  assert.equal(await m.check(pid), 'CHECK ok');
  // "um": registered for missing pages; the flags are those dumped ("nh" from the fixture's madvise).
  assert.deepEqual(vmFlags(pid), before);
  assert.ok(before.some((f) => / nh\b/.test(f)));
  assert.ok(vmFlags(pid).every((f) => !/ um\b/.test(f)));
  assert.ok(
    readdirSync(`/proc/${pid}/fd`).every(
      (fd) => !readlinkSync(`/proc/${pid}/fd/${fd}`).includes('userfaultfd'),
    ),
  );
});
