// The two page scanners on a real process: every page reported once, whatever the vector size.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { after, before, test } from 'node:test';
import { parseMaps } from '../../src/proc/maps.js';
import { userProcessStat } from '../../src/proc/process.js';
import { parseSmaps } from '../../src/proc/smaps.js';
import { DirtyTracker } from '../../src/memory/dirty.js';
import { processVmWritev } from '../../src/sys/process-vm.js';
import { RemoteSyscalls } from '../../src/tracee/remote.js';
import { Tracee } from '../../src/tracee/tracee.js';
import { classifyVmas } from '../../src/vma/classify.js';
import { openPageScanner, PAGE, walkPresentWritten, type PageRun } from '../../src/vma/pages.js';
import { fixture } from '../helpers/fixtures.js';
import { startProcess, type Started } from '../helpers/processes.js';

let scratch: string;
let target: Started;
let anon: { start: bigint; end: bigint };

before(async () => {
  scratch = mkdtempSync(`${tmpdir()}/ferry-pages-`);
  target = await startProcess(fixture('vmas'), [scratch]);
  const start = BigInt((JSON.parse(target.readyLine) as { anon: string }).anon);
  anon = parseMaps(readFileSync(`/proc/${target.pid}/maps`, 'latin1')).find((m) => m.start === start)!;
});

after(async () => {
  await target.stop();
  rmSync(scratch, { recursive: true, force: true });
});

function pagesOf(method: 'pagemap-scan' | 'pagemap', regionsPerCall?: number): bigint[] {
  const scanner = openPageScanner(target.pid, method, regionsPerCall);
  const pages: bigint[] = [];
  try {
    scanner.scan(anon, (run: PageRun) => {
      for (let a = run.start; a < run.end; a += 4096n) pages.push(a);
    });
  } finally {
    scanner.close();
  }
  return pages;
}

test('every other page of the 64 MiB region, each reported exactly once', () => {
  const expected = Array.from({ length: 8192 }, (_, i) => anon.start + BigInt(i * 2 * 4096));
  assert.deepEqual(pagesOf('pagemap'), expected);
  // 8192 one-page runs: a vector of exactly 8192, of 1, of 7 and of 8191 slots all need continuation.
  for (const slots of [8192, 1, 7, 8191, 100000]) {
    assert.deepEqual(pagesOf('pagemap-scan', slots), expected, `${slots} regions per call`);
  }
});

test('a walk made ahead of its use finds the present pages, and which were written since tracking began', async () => {
  // Track writes to the process as a pre-copy does, then write two of its present pages.
  const tracee = Tracee.freeze(target.pid);
  let tracker: DirtyTracker;
  try {
    const remote = RemoteSyscalls.open(tracee);
    try {
      const smaps = parseSmaps(readFileSync(`/proc/${target.pid}/smaps`, 'latin1'), 'smaps');
      tracker = DirtyTracker.start(remote, classifyVmas(smaps, userProcessStat(target.pid), []));
    } finally {
      remote.close();
    }
  } finally {
    tracee.release();
  }
  try {
    tracker.restart([anon]); // every page protected: unwritten from now on
    const present = pagesOf('pagemap-scan');
    const written = [present[3]!, present[5000]!];
    for (const addr of written) processVmWritev(target.pid, Buffer.alloc(8, 1), [{ addr, len: 8 }]);
    const half = anon.start + (anon.end - anon.start) / 2n;
    // The walk covers the first half; the second is scanned when asked, as it was not walked.
    const scanner = await walkPresentWritten(target.pid, [{ start: anon.start, end: half }]);
    const pages: bigint[] = [];
    const writes: bigint[] = [];
    try {
      scanner.scan(anon, (run) => {
        for (let a = run.start; a < run.end; a += 4096n) {
          pages.push(a);
          if (run.flags & PAGE.WRITTEN) writes.push(a);
        }
      });
    } finally {
      scanner.close();
      scanner.close(); // idempotent: a failed dump closes it whether or not its capture did
    }
    assert.deepEqual(pages, present);
    assert.deepEqual(writes, written);
  } finally {
    tracker.close();
  }
});
