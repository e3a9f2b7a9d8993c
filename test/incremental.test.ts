// Incremental checkpoints: `ferry dump --every` keeps dirty tracking open between dumps, so each
// image after the first of a chain stores only what the process wrote since; restore follows the
// chain of parents. The workload rewrites its memory at a rate and checks every page on SIGUSR1.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { before, test } from 'node:test';
import { cleanupAfterAll } from './helpers/cleanup.js';
import { runCli } from './helpers/cli.js';
import { CLI } from './helpers/paths.js';
import { traceState } from './helpers/processes.js';
import { becomeSubreaper, killAndReap } from './helpers/reaper.js';
import { assertUntracked, startSelfChecking, type SelfChecking } from './helpers/self-check.js';

let work: string;
const cleanup = cleanupAfterAll();

before(() => {
  becomeSubreaper();
  work = mkdtempSync(`${tmpdir()}/ferry-inc-`);
  cleanup(() => rmSync(work, { recursive: true, force: true }));
});

/**
 * The dirty fixture: `mib` MiB rewritten at `rate` MB/s, its write counter in a private file mapping
 * (stored whole by every dump), so that a restore with pages older than the counter fails its check.
 */
function dirty(mib: number, rate: number): Promise<SelfChecking> {
  const home = mkdtempSync(`${work}/w-`);
  return startSelfChecking(home, 'dirty', [String(mib), String(rate), `${home}/counter`], cleanup);
}

/** Restore the image in `dir`, to be killed after the tests, and have it check every page of `d`'s. */
async function restoredWhole(d: SelfChecking, dir: string): Promise<number> {
  const r = await runCli(['restore', '-D', dir]);
  assert.equal(r.code, 0, r.stderr);
  const pid = Number(r.stdout.trim());
  cleanup(() => killAndReap(pid));
  assert.match(await d.check(pid), /^CHECK ok /);
  return pid;
}

interface EveryLine {
  image?: string;
  pages?: number;
  unchangedPages?: number;
  chainLength?: number;
  ended?: string;
  dumps?: number;
}

/** Start `ferry dump --every`; its JSON lines as they come, and how it ends. */
function every(pid: number, dir: string, ...extra: string[]) {
  const child = spawn(CLI, ['dump', String(pid), '-D', dir, '--json', ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: EveryLine[] = [];
  let stderr = '';
  let buffered = '';
  child.stdout.on('data', (d: Buffer) => {
    buffered += d.toString();
    for (let i = buffered.indexOf('\n'); i >= 0; i = buffered.indexOf('\n')) {
      lines.push(JSON.parse(buffered.slice(0, i)) as EveryLine);
      buffered = buffered.slice(i + 1);
    }
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
  cleanup(async () => {
    child.kill('SIGKILL');
    await closed;
  });
  return {
    lines,
    closed,
    stderr: () => stderr,
    async untilDumps(count: number): Promise<void> {
      for (const until = Date.now() + 30_000; lines.filter((l) => l.image).length < count;) {
        if (Date.now() > until) assert.fail(`only ${lines.length} dumps: ${stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    stop: () => child.kill('SIGTERM'),
  };
}

test('dump --every: later images store only what changed, --keep prunes whole chains, restore follows parents', async () => {
  const d = await dirty(32, 4);
  const dir = `${work}/every`;
  const run = every(d.pid, dir, '--every', '250ms', '--keep', '3');
  await run.untilDumps(6);
  // Checked while dumps go on, so that the newest image has the report's offset past this line.
  assert.match(await d.check(), /^CHECK ok /);
  await run.untilDumps(8);
  run.stop();
  assert.equal(await run.closed, 0, run.stderr());
  const images = run.lines.filter((l) => l.image);
  assert.deepEqual(run.lines.at(-1), {
    pid: d.pid,
    dumps: images.length,
    latest: images.at(-1)!.image,
    ended: 'stopped',
  });
  // Chains of at most 3: every fourth image stores everything again.
  assert.deepEqual(
    images.slice(0, 7).map((l) => l.chainLength),
    [1, 2, 3, 1, 2, 3, 1],
  );
  for (const l of images.filter((x) => x.chainLength! > 1))
    assert.ok(
      l.unchangedPages! > 4 * l.pages!,
      `${l.image}: ${l.pages} pages stored, ${l.unchangedPages} unchanged`,
    );
  assert.equal(images[0]!.unchangedPages, 0);
  // The newest 3 images and the chains they need stay: at most 2 × 3 - 1.
  const left = readdirSync(dir).sort();
  assert.ok(left.length >= 3 && left.length <= 5, left.join(' '));
  assert.ok(left.includes('000001') === false, 'the first chain is gone');
  // The process ran on throughout, and is neither traced nor tracked now.
  assert.equal(traceState(d.pid).tracerPid, 0);
  assertUntracked(d.pid);

  // The newest image restores through its parents to a process whose every page is right.
  const latest = images.at(-1)!.image!;
  d.child.kill('SIGKILL');
  await d.exited;
  const pid = await restoredWhole(d, latest);
  killAndReap(pid);

  // A parent changed after its child was made breaks the chain, and restore says so.
  assert.match(readFileSync(`${latest}/manifest.json`, 'utf8'), /"parent": \{/);
  const parentOfLatest = JSON.parse(readFileSync(`${latest}/manifest.json`, 'utf8')) as {
    parent: { path: string };
  };
  const parentDir = `${latest}/${parentOfLatest.parent.path}`;
  const original = readFileSync(`${parentDir}/manifest.json`, 'utf8');
  writeFileSync(
    `${parentDir}/manifest.json`,
    original.replace(/"created": "[^"]*"/, '"created": "2000-01-01T00:00:00.000Z"'),
  );
  const broken = await runCli(['restore', '-D', latest]);
  assert.equal(broken.code, 1);
  assert.match(broken.stderr, /FERRY_IMAGE_CORRUPT|checksum|not the parent image/);
});

test('dump --every ends with the process, and exits 0', async () => {
  const d = await dirty(4, 1);
  const run = every(d.pid, `${work}/ends`, '--every', '200ms');
  await run.untilDumps(2);
  d.child.kill('SIGKILL');
  await d.exited;
  assert.equal(await run.closed, 0, run.stderr());
  assert.equal(run.lines.at(-1)!.ended, 'exited');
});

test('dump --track-mem, then --parent: each image holds only what changed; a stale parent is refused', async () => {
  const d = await dirty(16, 2);
  const base = mkdtempSync(`${work}/track-`);
  const dump = async (
    image: string,
    ...extra: string[]
  ): Promise<{ pages: number; unchangedPages: number }> => {
    const r = await runCli(['dump', String(d.pid), '-D', `${base}/${image}`, '--json', ...extra]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    return JSON.parse(r.stdout) as { pages: number; unchangedPages: number };
  };
  const first = await dump('a', '--leave-running', '--track-mem');
  assert.equal(first.unchangedPages, 0);
  // The process holds the tracker now, and ferry's own dumps leave it out of their images.
  assert.ok(readFileSync(`/proc/${d.pid}/smaps`, 'utf8').includes(' uw'), 'tracked after --track-mem');
  await new Promise((r) => setTimeout(r, 300));
  const second = await dump('b', '--leave-running', '--track-mem', '--parent', `${base}/a`);
  assert.ok(
    second.unchangedPages > 4 * second.pages,
    `${second.pages} stored, ${second.unchangedPages} unchanged`,
  );
  // Tracking goes on from b now: a dump on top of a would miss what changed since.
  const stale = await runCli([
    'dump',
    String(d.pid),
    '-D',
    `${base}/x`,
    '--leave-running',
    '--parent',
    `${base}/a`,
  ]);
  assert.equal(stale.code, 1);
  assert.match(stale.stderr, /tracking goes on from .*\/b now/);
  assert.match(await d.check(), /^CHECK ok /);
  // The last of the chain, without --track-mem: the process lets go of the tracker.
  const third = await dump('c', '--leave-running', '--parent', `${base}/b`);
  assert.ok(third.unchangedPages > 0);
  assertUntracked(d.pid);
  assert.ok(
    readdirSync(`/proc/${d.pid}/fd`).every(
      (fd) => !readlinkSync(`/proc/${d.pid}/fd/${fd}`).includes('userfaultfd'),
    ),
    'no tracker descriptor left in the process',
  );
  d.child.kill('SIGKILL');
  await d.exited;
  const shown = await runCli(['show', `${base}/c`]);
  assert.match(shown.stdout, /^incremental: builds on .*\/b \(/m);
  assert.match(shown.stdout, /^3 page layers: .*\/a\/pages\.img, .*\/b\/pages\.img, .*\/c\/pages\.img$/m);
  // c restores through b and a, to a process whose every page is right.
  const pid = await restoredWhole(d, `${base}/c`);
  // Records of tracked processes that are gone are forgotten by the next dump.
  const runtime = mkdtempSync(`${work}/run-`);
  mkdirSync(`${runtime}/tracking`);
  writeFileSync(`${runtime}/tracking/${d.pid}-1.json`, '{}');
  const next = await runCli(['dump', String(pid), '-D', `${base}/d`, '--leave-running'], {
    wrap: ['env', `FERRY_RUNTIME_DIR=${runtime}`],
  });
  assert.equal(next.code, 0, next.stderr);
  assert.deepEqual(readdirSync(`${runtime}/tracking`), []);
});

test('a tracked process: a plain dump pre-copies through its tracker and the chain goes on; a lost record is no dead end', async () => {
  const d = await dirty(64, 2);
  const base = mkdtempSync(`${work}/lend-`);
  const runtime = mkdtempSync(`${work}/run-`);
  const ferry = (...args: string[]) => runCli(args, { wrap: ['env', `FERRY_RUNTIME_DIR=${runtime}`] });
  const dump = async (image: string, ...extra: string[]) => {
    const r = await ferry(
      'dump',
      String(d.pid),
      '-D',
      `${base}/${image}`,
      '--leave-running',
      '--json',
      ...extra,
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    return JSON.parse(r.stdout) as { pages: number; unchangedPages: number; precopyRounds: unknown[] };
  };
  await dump('a', '--track-mem');
  await new Promise((r) => setTimeout(r, 300));
  // Its own tracker could not register over memory the process's tracker holds: it borrows that one,
  // and copies the memory in rounds, frozen only for what was written since.
  const plain = await dump('p');
  assert.ok(plain.precopyRounds.length > 0, 'pre-copied');
  assert.ok(
    plain.unchangedPages > 4 * plain.pages,
    `${plain.pages} pages copied frozen, ${plain.unchangedPages} not`,
  );
  assert.ok(readFileSync(`/proc/${d.pid}/smaps`, 'utf8').includes(' uw'), 'still tracked');
  assert.match(await d.check(), /^CHECK ok /);
  // The chain from a misses nothing the plain dump's rounds saw written: b restores right (checked
  // last: its output file's offset is b's, and what the process writes after b gets overwritten).
  await new Promise((r) => setTimeout(r, 300));
  const b = await dump('b', '--track-mem', '--parent', `${base}/a`);
  assert.ok(b.unchangedPages > b.pages, `${b.pages} stored, ${b.unchangedPages} unchanged`);

  // The record lost: dumps still leave the tracker out, a chain cannot go on, untrack releases it.
  rmSync(`${runtime}/tracking`, { recursive: true });
  assert.equal((await ferry('dump', String(d.pid), '-D', `${base}/q`, '--leave-running')).code, 0);
  const orphan = await ferry(
    'dump',
    String(d.pid),
    '-D',
    `${base}/x`,
    '--leave-running',
    '--parent',
    `${base}/b`,
  );
  assert.equal(orphan.code, 1);
  assert.match(orphan.stderr, new RegExp(`\`ferry untrack ${d.pid}\` releases the tracker`));
  const untracked = await ferry('untrack', String(d.pid), '--json');
  assert.equal(untracked.code, 0, untracked.stderr);
  assert.ok((JSON.parse(untracked.stdout) as { fd: number | null }).fd !== null);
  assertUntracked(d.pid);
  const again = JSON.parse((await ferry('untrack', String(d.pid), '--json')).stdout) as { fd: number | null };
  assert.equal(again.fd, null);
  d.child.kill('SIGKILL');
  await d.exited;
  await restoredWhole(d, `${base}/b`);
});

test('a compressed image on an uncompressed parent restores with every page right', async () => {
  // The pages the child holds (compressed) lie in the VMAs whose other pages the parent holds: the
  // compressed ones go in before any of those VMAs is registered for UFFDIO_COPY.
  const d = await dirty(16, 2);
  const base = mkdtempSync(`${work}/mixed-`);
  const dump = async (image: string, ...extra: string[]): Promise<void> => {
    const r = await runCli(['dump', String(d.pid), '-D', `${base}/${image}`, ...extra]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  };
  await dump('a', '--leave-running', '--track-mem');
  await new Promise((r) => setTimeout(r, 300));
  await dump('b', '--leave-running', '--compress', '--parent', `${base}/a`);
  d.child.kill('SIGKILL');
  await d.exited;
  await restoredWhole(d, `${base}/b`);
});

interface DumpJson {
  frozenMs: number;
  pages: number;
  unchangedPages: number;
  precopyRounds: { bytes: number }[];
}

test('dump pre-copies a process holding 64 MiB: frozen only for what it wrote, restored with every page right', async () => {
  const d = await dirty(64, 8);
  const base = mkdtempSync(`${work}/pre-`);
  const dump = async (image: string, ...extra: string[]): Promise<DumpJson> => {
    const r = await runCli(['dump', String(d.pid), '-D', `${base}/${image}`, '--json', ...extra]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    return JSON.parse(r.stdout) as DumpJson;
  };
  // By default a process this large is copied while it runs, then only its writes while frozen.
  const live = await dump('live', '--leave-running');
  assert.ok(live.precopyRounds.length >= 1, JSON.stringify(live.precopyRounds));
  assert.ok(live.precopyRounds[0]!.bytes >= 64 << 20);
  assert.ok(live.unchangedPages > 4 * live.pages, `${live.pages} stored, ${live.unchangedPages} unchanged`);
  assert.equal(traceState(d.pid).tracerPid, 0);
  assertUntracked(d.pid);
  assert.match(await d.check(), /^CHECK ok /);
  // --no-pre-copy copies it all frozen.
  const frozen = await dump('frozen', '--leave-running', '--no-pre-copy');
  assert.deepEqual(frozen.precopyRounds, []);
  assert.equal(frozen.unchangedPages, 0);
  // A selection of VMAs and a pre-copy do not go together.
  const both = await runCli(['dump', String(d.pid), '-D', `${base}/x`, '--pre-copy', '--vmas', 'heap']);
  assert.equal(both.code, 2);
  assert.match(both.stderr, /--pre-copy does not go with --vmas/);
  // Killed after a pre-copy, it restores from both layers with every page as it last wrote it.
  const killed = await dump('killed');
  assert.ok(killed.precopyRounds.length >= 1);
  await d.exited;
  const pid = await restoredWhole(d, `${base}/killed`);
  assertUntracked(pid);
});

test('a small process is dumped frozen in one copy; --pre-copy forces rounds', async () => {
  const d = await dirty(4, 1);
  const base = mkdtempSync(`${work}/small-`);
  const dumpJson = async (image: string, ...extra: string[]): Promise<DumpJson> => {
    const r = await runCli([
      'dump',
      String(d.pid),
      '-D',
      `${base}/${image}`,
      '--json',
      '--leave-running',
      ...extra,
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    return JSON.parse(r.stdout) as DumpJson;
  };
  assert.deepEqual((await dumpJson('auto')).precopyRounds, []);
  assert.ok((await dumpJson('forced', '--pre-copy')).precopyRounds.length >= 1);
  assertUntracked(d.pid);
  assert.match(await d.check(), /^CHECK ok /);
});
