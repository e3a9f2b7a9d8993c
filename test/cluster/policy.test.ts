// The balancing policy, pure: hosts and jobs in, migrations out.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  decide,
  hostLoad,
  moveGain,
  predictMigration,
  DEFAULT_PARAMS,
  placeJob,
  POLICIES,
  type HostView,
  type JobView,
} from '../../src/cluster/policy.js';
import { decodeJobHeader, encodeJobHeader } from '../../src/cluster/job.js';

const MiB = 2 ** 20;

function job(id: string, cpuSeconds: number, extra: Partial<JobView> = {}): JobView {
  return {
    id,
    name: id,
    demand: 1,
    cpuSeconds,
    rssBytes: 16 * MiB,
    dirtyBytesPerSecond: 0,
    pinned: false,
    ...extra,
  };
}

function host(id: string, jobs: JobView[], extra: Partial<HostView> = {}): HostView {
  return { id, capacity: 0.4, otherDemand: 0, memAvailableBytes: 8 * 2 ** 30, busy: false, jobs, ...extra };
}

const busy = (): HostView =>
  host(
    'a',
    ['1', '2', '3', '4', '5', '6'].map((id) => job(id, 2)),
  );

test('an overloaded host gives its job to the idlest host, one move per host', () => {
  const moves = decide([busy(), host('b', []), host('c', [])]);
  assert.equal(moves.length, 1, 'the source takes part in one move at a time');
  const [m] = moves;
  assert.equal(m!.from, 'a');
  assert.ok(['b', 'c'].includes(m!.to));
  assert.deepEqual(m!.load.from, [15, 12.5]);
  assert.deepEqual(m!.load.to, [0, 2.5]);
  assert.ok(m!.gainSeconds > m!.costSeconds * DEFAULT_PARAMS.gainCostRatio);
  assert.match(m!.reason, /load 15\.00 on a against 0\.00 on/);
  // Two overloaded hosts and two idle ones: two moves, each between its own pair.
  const two = decide([busy(), { ...busy(), id: 'd' }, host('b', []), host('c', [])]);
  assert.equal(two.length, 2);
  assert.equal(new Set(two.flatMap((d) => [d.from, d.to])).size, 4);
});

test('the oldest job is moved first: its expected remaining time is the longest', () => {
  const jobs = [job('young', 0.5), job('old', 30), job('middle', 5)];
  const [m] = decide([host('a', jobs), host('b', [])]);
  assert.equal(m!.job, 'old');
  assert.ok(
    moveGain(jobs[1]!, host('a', jobs), host('b', [])) > moveGain(jobs[0]!, host('a', jobs), host('b', [])),
  );
});

test('nothing moves without a gain worth its cost', () => {
  // Not overloaded: every job runs at full speed where it is.
  assert.deepEqual(decide([host('a', [job('1', 100)], { capacity: 2 }), host('b', [])]), []);
  // Balanced already: a move only shifts the queue (the margin is the hysteresis).
  assert.deepEqual(
    decide([host('a', [job('1', 9), job('2', 9)]), host('b', [job('3', 9), job('4', 9)])]),
    [],
  );
  // Jobs too young to be worth moving (their remaining time is estimated by their age).
  assert.deepEqual(decide([host('a', [job('1', 0.01), job('2', 0.01)]), host('b', [])]), []);
  // A job too large for the link: seconds of downtime for a second of gain.
  const huge = (id: string): JobView => job(id, 0.5, { rssBytes: 4 * 2 ** 30, dirtyBytesPerSecond: 1e9 });
  assert.deepEqual(decide([host('a', [huge('1'), huge('2')]), host('b', [])]), []);
});

test('pinned jobs, recent arrivals, full or busy targets are left alone', () => {
  const pinned = [job('1', 20, { pinned: true }), job('2', 20, { pinned: true })];
  assert.deepEqual(decide([host('a', pinned), host('b', [])]), []);
  const arrived = [job('1', 20, { sinceMoveMs: 1000 }), job('2', 20, { sinceMoveMs: 2000 })];
  assert.deepEqual(decide([host('a', arrived), host('b', [])]), [], 'no ping-pong');
  assert.equal(decide([host('a', arrived), host('b', [])], { params: { minStayMs: 500 } }).length, 1);
  assert.deepEqual(decide([busy(), host('b', [], { memAvailableBytes: 32 * MiB })]), [], 'memory fit');
  assert.deepEqual(decide([busy(), host('b', [], { busy: true })]), [], 'one migration per host');
  assert.deepEqual(decide([busy(), host('b', [], { closed: true })]), [], 'a drained host takes none');
  assert.deepEqual(decide([{ ...busy(), busy: true }, host('b', [])]), []);
});

test('receiver-initiated: only the asking host takes a job', () => {
  const hosts = [busy(), host('b', []), host('c', [job('x', 1)])];
  const [m] = decide(hosts, { receiver: 'c' });
  assert.equal(m!.to, 'c');
  assert.deepEqual(decide([busy(), host('b', [])], { receiver: 'a' }), [], 'a busy host asks for nothing');
});

test('hosts of different sizes: load is demand over capacity', () => {
  const big = host('big', [job('1', 5), job('2', 5)], { capacity: 2 });
  assert.equal(hostLoad(big), 1);
  const [m] = decide([host('small', [job('3', 5), job('4', 5), job('5', 5)], { capacity: 1 }), big]);
  assert.equal(m!.to, 'big');
  assert.deepEqual(
    decide([big, host('small', [], { capacity: 1 })]),
    [],
    'a host at capacity is not overloaded',
  );
});

test('the cost model: pre-copy converges while writes are slower than the link, else stop-copy', () => {
  const p = DEFAULT_PARAMS;
  const idle = predictMigration(1000e6, 0, p, 100e6);
  assert.equal(idle.mode, 'pre-copy');
  assert.equal(idle.bytes, 1000e6);
  assert.equal(idle.totalMs, 10_000 + p.fixedMs);
  assert.equal(idle.downtimeMs, p.fixedMs, 'nothing written meanwhile: nothing left for the frozen copy');
  const busyWriter = predictMigration(1000e6, 20e6, p, 100e6);
  assert.equal(busyWriter.mode, 'pre-copy');
  assert.ok(busyWriter.downtimeMs <= p.maxDowntimeMs + p.fixedMs, String(busyWriter.downtimeMs));
  assert.ok(busyWriter.bytes > 1000e6 && busyWriter.totalMs > idle.totalMs);
  const hot = predictMigration(1000e6, 80e6, p, 100e6);
  assert.equal(hot.mode, 'stop-copy');
  assert.equal(hot.downtimeMs, hot.totalMs);
});

test('named policies differ only in their parameters', () => {
  assert.deepEqual(POLICIES.default, {});
  const hosts = [host('a', [job('1', 3), job('2', 3)], { capacity: 1 }), host('b', [], { capacity: 1 })];
  assert.equal(decide(hosts, { params: POLICIES.eager }).length, 1);
  assert.equal(decide(hosts, { params: POLICIES.cautious }).length, 0);
});

test('at 10,000 hosts every overloaded host is paired with an idle one', () => {
  const hosts = Array.from({ length: 10_000 }, (_, i) =>
    host(String(i), i % 10 === 0 ? [job(`${i}a`, 10), job(`${i}b`, 10), job(`${i}c`, 10)] : []),
  );
  const moves = decide(hosts);
  assert.equal(moves.length, 1000);
  assert.ok(moves.every((m) => Number(m.from) % 10 === 0 && Number(m.to) % 10 !== 0));
  assert.equal(new Set(moves.map((m) => m.to)).size, 1000);
});

test('a job header carries its past; a malformed one is refused', () => {
  const info = {
    id: 'job-1',
    name: 'sim',
    startedAt: 1,
    hops: ['10.0.0.1:7070'],
    pinned: false,
    cpuSecondsBefore: 2.5,
    dirtyBytesPerSecond: 4096,
  };
  assert.deepEqual(decodeJobHeader(encodeJobHeader(info)), info);
  for (const bad of [
    '%%%',
    Buffer.from('[]').toString('base64url'),
    encodeJobHeader({ ...info, id: '../x' }),
    encodeJobHeader({ ...info, dirtyBytesPerSecond: -1 }),
  ])
    assert.throws(() => decodeJobHeader(bad), { code: 'FERRY_USAGE' });
  assert.throws(() => decodeJobHeader(encodeJobHeader({ ...info, hops: Array<string>(100).fill('h:1') })), {
    code: 'FERRY_USAGE',
  });
});

test('placement at birth: the host where one more job makes the least load, with room for it', () => {
  const hosts = [busy(), host('b', [job('x', 1)]), host('c', [job('y', 1), job('z', 1)], { capacity: 2 })];
  assert.equal(placeJob(hosts)?.id, 'c', 'load 1.5 on c against 5 on b');
  assert.equal(placeJob([busy(), host('b', [], { closed: true })])?.id, 'a', 'a drained host takes none');
  assert.equal(placeJob([host('b', [], { memAvailableBytes: 10 * MiB })], 1 << 30), undefined);
});
