// The two page scanners on a real process: every page reported once, whatever the vector size.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { after, before, test } from 'node:test';
import { parseMaps } from '../../src/proc/maps.js';
import { openPageScanner, type PageRun } from '../../src/vma/pages.js';
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
