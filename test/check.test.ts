import assert from 'node:assert/strict';
import { test } from 'node:test';
import { check } from '../src/check.js';
import { runCli } from './helpers/cli.js';

const FEATURES = [
  'ptrace-seize',
  'process_vm_readv',
  'map_files',
  'PAGEMAP_SCAN',
  'uffd-wp-async',
  'uffd-copy',
  'uffd-lazy',
  'libxxhash',
  'soft-dirty',
  'PROCMAP_QUERY',
  'clone3-set_tid',
  'PTRACE_GET_RSEQ_CONFIGURATION',
  'PR_SET_MM_MAP',
  'PTRACE_O_SUSPEND_SECCOMP',
  'nft',
  'CAP_SYS_PTRACE',
  'CAP_CHECKPOINT_RESTORE',
  'CAP_SYS_ADMIN',
];

test('every feature is reported with its use and what degrades without it', () => {
  const report = check();
  const ids = report.features.map((f) => f.id);
  for (const id of FEATURES) assert.ok(ids.includes(id), id);
  for (const f of report.features) {
    assert.ok(f.usedFor.length > 10 && f.without.length > 5 && f.detail.length > 0, f.id);
  }
  // This machine runs ferry's tests as root on a 6.x kernel: the required features are there.
  assert.equal(report.ok, true, JSON.stringify(report.features.filter((f) => !f.available)));
  assert.equal(
    report.ok,
    report.features.every((f) => f.available || !f.required),
  );
});

test('the probes match what the kernel shows elsewhere', async () => {
  const report = check();
  const byId = new Map(report.features.map((f) => [f.id, f]));
  const { readFileSync } = await import('node:fs');
  // soft-dirty shows up as the "sd" VmFlag on every VMA when the kernel tracks it.
  const hasSd = / sd( |$)/m.test(
    readFileSync('/proc/self/smaps', 'latin1')
      .split('\n')
      .filter((l) => l.startsWith('VmFlags'))
      .join('\n'),
  );
  assert.equal(byId.get('soft-dirty')!.available, hasSd);
  assert.equal(
    report.dirtyTracking,
    byId.get('uffd-wp-async')!.available && byId.get('PAGEMAP_SCAN')!.available
      ? 'uffd-wp-async'
      : hasSd
        ? 'soft-dirty'
        : 'page-hashes',
  );
});

test('ferry check: a table, exit 0 here; --json parses', async () => {
  const text = await runCli(['check']);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^yes\s+ptrace-seize/m);
  assert.match(text.stdout, /dirty-page tracking: /);
  const json = await runCli(['check', '--json']);
  assert.equal(json.code, 0);
  const report = JSON.parse(json.stdout) as { ok: boolean; features: unknown[] };
  assert.equal(report.ok, true);
  assert.equal(report.features.length, FEATURES.length + 1);
});
