// The agent's cgroup on both hierarchies. This machine's cpu controller is on v1 (the end-to-end
// tests use it); v2, what production hosts have, is checked here on a directory laid out as
// cgroupfs lays one out, the files the kernel would make written by the test.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { findCgroupMounts, openCgroup } from '../../src/cluster/cgroup.js';

function fakeRoot(controllers: string): string {
  const root = mkdtempSync(join(tmpdir(), 'ferry-cgroup-'));
  writeFileSync(join(root, 'cgroup.controllers'), controllers);
  writeFileSync(join(root, 'cgroup.subtree_control'), '');
  return root;
}

test('the mounts: the v2 hierarchy and whether it has the cpu controller, the v1 one that has it', () => {
  const v2 = fakeRoot('cpuset cpu io memory pids\n');
  const mounts = [
    'cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0',
    `cgroup2 ${v2} cgroup2 rw,nosuid,nodev,noexec,relatime 0 0`,
    'cgroup /sys/fs/cgroup/cpu cgroup rw,nosuid,nodev,noexec,relatime,cpu 0 0',
  ].join('\n');
  assert.deepEqual(findCgroupMounts(mounts), { v2: { root: v2, cpu: true }, v1Cpu: '/sys/fs/cgroup/cpu' });
  writeFileSync(join(v2, 'cgroup.controllers'), 'memory pids\n');
  assert.deepEqual(findCgroupMounts(mounts).v2, { root: v2, cpu: false });
  rmSync(v2, { recursive: true });
});

test('cgroup v2: the cpu controller enabled on the way down, cpu.max, cgroup.procs, PSI', () => {
  const root = fakeRoot('cpu memory\n');
  try {
    const cg = openCgroup('ferry/host-a', 0.4, { v2: { root, cpu: true } });
    assert.equal(cg.version, 2);
    assert.equal(cg.dir, join(root, 'ferry/host-a'));
    assert.equal(cg.psiDir, cg.dir);
    assert.equal(readFileSync(join(root, 'cgroup.subtree_control'), 'utf8'), '+cpu');
    assert.equal(readFileSync(join(root, 'ferry/cgroup.subtree_control'), 'utf8'), '+cpu');
    assert.equal(readFileSync(join(cg.dir, 'cpu.max'), 'utf8'), '40000 100000');
    assert.equal(cg.quota(), 0.4);
    writeFileSync(join(cg.dir, 'cpu.max'), 'max 100000\n');
    assert.equal(cg.quota(), undefined, 'no quota: the CPU count is the capacity');
    cg.add(4242);
    assert.equal(readFileSync(join(cg.dir, 'cgroup.procs'), 'utf8'), '4242');
    writeFileSync(
      join(cg.dir, 'cpu.pressure'),
      'some avg10=12.50 avg60=3.00 avg300=1.00 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n',
    );
    assert.equal(cg.pressure(), 12.5);
    assert.throws(() => openCgroup('../escape', 1, { v2: { root, cpu: true } }), { code: 'FERRY_USAGE' });
  } finally {
    rmSync(root, { recursive: true });
  }
});

test('cgroup v1 with a v2 twin for PSI (a hybrid host); no cpu controller anywhere is said', () => {
  const v1 = mkdtempSync(join(tmpdir(), 'ferry-cgroup-v1-'));
  const v2 = fakeRoot('');
  try {
    const cg = openCgroup('jobs', 1.5, { v1Cpu: v1, v2: { root: v2, cpu: false } });
    assert.equal(cg.version, 1);
    assert.equal(readFileSync(join(v1, 'jobs/cpu.cfs_quota_us'), 'utf8'), '150000');
    assert.equal(readFileSync(join(v1, 'jobs/cpu.cfs_period_us'), 'utf8'), '100000');
    assert.equal(cg.quota(), 1.5);
    assert.equal(cg.psiDir, join(v2, 'jobs'));
    cg.add(77);
    assert.equal(readFileSync(join(v1, 'jobs/cgroup.procs'), 'utf8'), '77');
    assert.equal(readFileSync(join(v2, 'jobs/cgroup.procs'), 'utf8'), '77');
    assert.throws(() => openCgroup('x', 1, {}), {
      code: 'FERRY_USAGE',
      message: /no cgroup hierarchy with the cpu controller/,
    });
  } finally {
    rmSync(v1, { recursive: true });
    rmSync(v2, { recursive: true });
  }
});
