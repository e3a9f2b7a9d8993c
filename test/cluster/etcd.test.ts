// The cluster on etcd (Debian's etcd-server, started here on loopback ports): agents registered
// under leases, a dead host's checkpointed jobs restored elsewhere from their checkpoints, fencing
// of the copies the cluster replaced, and balancers of which one leads, a standby taking over a
// move the killed leader began.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';
import type { DecisionEvent } from '../../src/cluster/balancer.js';
import { ClusterStore, type JobRecord } from '../../src/cluster/etcd.js';
import { startLocalEtcd, type LocalEtcd } from '../../src/cluster/local-etcd.js';
import { isErrno } from '../../src/sys/errno.js';
import { pidfdOpen, pidfdSendSignal } from '../../src/sys/pidfd.js';
import { SIG } from '../../src/sys/signal.js';
import { cleanupAfterAll } from '../helpers/cleanup.js';
import { runCli } from '../helpers/cli.js';
import { clusterLab, load, run, SPIN, until, type ClusterLab, type TestAgent } from '../helpers/cluster.js';
import { CLI, PYTHON } from '../helpers/paths.js';
import { processState, startProcess, type Started } from '../helpers/processes.js';
import { killAndReap } from '../helpers/reaper.js';

const cleanup = cleanupAfterAll();
let lab: ClusterLab;
let keyFile: string;
let shared: string;
const HOST_TTL_S = 3;
const EVERY_MS = 2_000;
/** Counts to stdout, ten a second: how far it got is how much work it kept. */
const COUNTER = 'import time\nn = 0\nwhile True:\n    n += 1\n    print(n, flush=True)\n    time.sleep(0.1)';

before(() => {
  lab = clusterLab('ferry-etcd-', cleanup);
  keyFile = join(lab.work, 'image.key');
  writeFileSync(keyFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  shared = join(lab.work, 'shared');
  mkdirSync(shared);
});

async function etcd(members: number): Promise<LocalEtcd> {
  const e = await startLocalEtcd({ members, dir: join(lab.work, `etcd-${randomBytes(3).toString('hex')}`) });
  cleanup(() => e.stop());
  return e;
}

/** An agent of the etcd cluster at `urls`, sealing with the cluster's image key. */
const member = (urls: string[], ttl = HOST_TTL_S, more: Parameters<ClusterLab['startAgent']>[0] = {}) =>
  lab.startAgent({
    cpus: null,
    ...more,
    extra: [
      '--etcd',
      urls.join(','),
      '--lease-ttl',
      String(ttl),
      '--image-key',
      keyFile,
      ...(more.extra ?? []),
    ],
  });

async function balancer(urls: string[], id: string): Promise<Started> {
  const b = await startProcess(CLI, [
    ...['balancer', '--etcd', urls.join(','), '--id', id, '--token-file', lab.tokenFile],
    ...['--interval', '500', '--json'],
  ]);
  cleanup(() => b.stop());
  return b;
}

const events = (b: Started): DecisionEvent[] => b.lines.map((l) => JSON.parse(l) as DecisionEvent);

/** Copies running of the job whose command line holds `marker`. */
function copies(marker: string): number[] {
  return readdirSync('/proc').flatMap((d) => {
    if (!/^\d+$/.test(d)) return [];
    try {
      const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      return argv.includes(marker) && processState(Number(d)) !== 'Z' ? [Number(d)] : [];
    } catch {
      return [];
    }
  });
}

/** A counter job on `a`, checkpointed every EVERY_MS into the shared directory. */
async function counter(
  a: TestAgent,
  name: string,
): Promise<{ id: string; pid: number; out: string; marker: string }> {
  const out = join(lab.work, `${name}.out`);
  const marker = `${name}-${randomBytes(4).toString('hex')}`;
  const job = await run(
    lab,
    a,
    [
      ...['--checkpoint-every', `${EVERY_MS}ms`, '--shared-dir', shared, '--stdout', out],
      '--',
      PYTHON,
      '-c',
      COUNTER,
      marker,
    ],
    name,
  );
  // Held from now on by a pidfd: orphaned by its agent (as tests here do), it is still killed at
  // the end should a test fail before it is done with it, and never another process under its PID.
  const pidfd = pidfdOpen(job.pid);
  cleanup(() => {
    try {
      pidfdSendSignal(pidfd, SIG.SIGKILL);
    } catch (err) {
      if (!isErrno(err, 'ESRCH')) throw err;
    } finally {
      closeSync(pidfd);
    }
  });
  return { ...job, out, marker };
}

const counts = (file: string): number[] => readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number);

async function checkpointed(store: ClusterStore, id: string): Promise<JobRecord> {
  return until('a checkpoint in etcd', async () => {
    const r = await store.job(id);
    return r?.checkpoint ? r : undefined;
  });
}

test("host failure: a dead host's checkpointed jobs run again elsewhere within the lease TTL + 5 s, losing at most one interval; its agent, restarted, runs no old copy", async (t) => {
  const e = await etcd(1);
  const store = new ClusterStore(e.urls);
  cleanup(() => store.close());
  const [a, b, c] = [await member(e.urls), await member(e.urls), await member(e.urls)];
  const leader = await balancer(e.urls, 'b1');
  await until('leadership', () => (events(leader).some((x) => x.event === 'elected') ? true : undefined));
  const jobs = [await counter(a, 'first'), await counter(a, 'second')];
  for (const j of jobs) {
    const first = await checkpointed(store, j.id);
    await until('a later checkpoint', async () =>
      ((await store.job(j.id))?.checkpointAt ?? 0) > first.checkpointAt! ? true : undefined,
    );
  }

  // The host dies: its agent and its jobs.
  await a.process.stop();
  jobs.forEach((j) => killAndReap(j.pid));
  const died = Date.now();
  // What each had counted when it died, and where its output stood.
  const before = jobs.map((j) => counts(j.out));
  const where = await until(
    'every job running elsewhere',
    async () => {
      const [onB, onC] = [await load(b), await load(c)];
      const at = jobs.map((j) => [onB, onC].filter((l) => l.jobs.some((x) => x.id === j.id)).length);
      return at.every((n) => n === 1) ? at : undefined;
    },
    (HOST_TTL_S + 10) * 1000,
  );
  const took = Date.now() - died;
  assert.deepEqual(where, [1, 1]);
  assert.ok(took <= (HOST_TTL_S + 5) * 1000, `restored ${took} ms after the host died`);
  t.diagnostic(`both jobs ran again ${took} ms after their host died (lease TTL ${HOST_TTL_S} s)`);
  for (const [i, j] of jobs.entries()) {
    // They go on counting from their checkpoint: what was lost is at most one interval's counting
    // (none, when it died just after one).
    const died = before[i]!;
    const after = await until('counting again', () => {
      const n = counts(j.out);
      return n.length > died.length + 5 ? n.slice(died.length) : undefined;
    });
    const lost = died.at(-1)! - after[0]! + 1;
    assert.ok(lost >= 0 && lost <= EVERY_MS / 100 + 5, `${j.id}: ${lost} counts lost`);
    t.diagnostic(`${j.id}: ${lost} counts lost (${EVERY_MS / 100} in one checkpoint interval)`);
    assert.deepEqual(
      after,
      after.map((_, k) => after[0]! + k),
      'it counts on, one by one',
    );
  }
  assert.ok(
    events(leader).filter((x) => x.event === 'recovery' && x.outcome === 'recovered').length === 2,
    leader.lines.join('\n'),
  );

  // Its agent comes back: it runs no old copy, and takes new work.
  const again = await member(e.urls, HOST_TTL_S, { listen: a.address, dataDir: a.dataDir });
  assert.equal((await load(again)).jobs.length, 0);
  for (const j of jobs) assert.equal(copies(j.marker).length, 1, `${j.id} runs once`);

  // The commands find the agents in etcd.
  const urls = e.urls.join(',');
  const status = await runCli(['cluster', 'status', '--etcd', urls, '--token-file', lab.tokenFile, '--json']);
  assert.equal(status.code, 0, status.stderr);
  const s = JSON.parse(status.stdout) as {
    hosts: { peer: string }[];
    jobs: { id: string }[];
    etcd: { leader: string; intents: unknown[]; checkpoints: { id: string; host: string }[] };
  };
  assert.equal(s.etcd.leader, 'b1');
  assert.deepEqual(s.etcd.intents, []);
  assert.deepEqual(s.etcd.checkpoints.map((c) => c.id).sort(), jobs.map((j) => j.id).sort());
  assert.ok(s.etcd.checkpoints.every((k) => [b.address, c.address].includes(k.host)));
  assert.deepEqual(s.hosts.map((h) => h.peer).sort(), [again.address, b.address, c.address].sort());
  assert.deepEqual(s.jobs.map((j) => j.id).sort(), jobs.map((j) => j.id).sort());
  const placed = await runCli([
    ...['run', '--etcd', urls, '--token-file', lab.tokenFile, '--json', '--'],
    ...[PYTHON, '-c', SPIN],
  ]);
  assert.equal(placed.code, 0, placed.stderr);
  assert.ok(
    [again.address, b.address, c.address].includes((JSON.parse(placed.stdout) as { agent: string }).agent),
  );

  // Drain one host of the agents etcd has: its jobs move on, the checkpointed ones each still once.
  const drained = await runCli(['drain', b.address, '--etcd', urls, '--token-file', lab.tokenFile, '--json']);
  assert.equal(drained.code, 0, drained.stderr);
  assert.equal((await load(b)).jobs.length, 0);
  for (const j of jobs) assert.equal(copies(j.marker).length, 1, `${j.id} runs once after the drain`);
  await until('the moved jobs recorded where they run', async () => {
    const records = await Promise.all(jobs.map((j) => store.job(j.id)));
    return records.every((r) => r && r.host !== b.address && r.host !== '') ? true : undefined;
  });
});

test('etcd out of reach, or malformed: one line and a non-zero exit', async () => {
  for (const args of [
    ['balancer', '--etcd', 'http://127.0.0.1:1'],
    ['cluster', 'status', '--etcd', 'http://127.0.0.1:1'],
    [
      'agent',
      '--listen',
      '127.0.0.1:0',
      '--data-dir',
      join(lab.work, 'unreached'),
      '--no-auth',
      '--etcd',
      'http://127.0.0.1:1',
    ],
  ]) {
    const r = await runCli(args);
    assert.equal(r.code, 1, args.join(' '));
    assert.match(r.stderr, /etcd at http:\/\/127\.0\.0\.1:1 does not answer/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
  const bad = await runCli(['balancer', '--etcd', 'etcd.example:2379']);
  assert.equal(bad.code, 2, 'a usage error');
  assert.match(bad.stderr, /--etcd takes http:\/\/host:port URLs/);
  const alone = await runCli(['run', '--agent', '127.0.0.1:1', '--checkpoint-every', '30s', '--', 'true']);
  assert.equal(alone.code, 2, 'a usage error');
  assert.match(alone.stderr, /--checkpoint-every and --shared-dir go together/);
});

test('fencing: an agent killed alone kills the copies it left before it serves; one paused past its lease kills its own as it wakes', async () => {
  const e = await etcd(1);
  const store = new ClusterStore(e.urls);
  cleanup(() => store.close());
  const [a, b] = [await member(e.urls), await member(e.urls)];
  await balancer(e.urls, 'b1');
  const job = await counter(a, 'orphan');
  await checkpointed(store, job.id);

  // Its agent dies, the job runs on (an orphan): the cluster restores it on b all the same.
  await a.process.stop();
  await until(
    'the job restored on b',
    async () => ((await load(b)).jobs.length === 1 ? true : undefined),
    15_000,
  );
  assert.ok(['S', 'R'].includes(processState(job.pid) ?? ''), 'the orphan still runs');
  const again = await member(e.urls, HOST_TTL_S, { listen: a.address, dataDir: a.dataDir });
  // The agent said it listens only once the orphan was dead.
  assert.ok(['Z', undefined].includes(processState(job.pid)), `the orphan is ${processState(job.pid)}`);
  killAndReap(job.pid);
  assert.equal(copies(job.marker).length, 1);
  assert.equal((await load(again)).jobs.length, 0);

  // b stands still past its lease: the job is restored on `again`; b, woken, kills its copy.
  const onB = (await load(b)).jobs[0]!;
  process.kill(b.process.pid, 'SIGSTOP');
  await until(
    'the job restored while b stands still',
    async () => ((await load(again)).jobs.length === 1 ? true : undefined),
    15_000,
  );
  process.kill(b.process.pid, 'SIGCONT');
  await until('b killed its copy', () =>
    ['Z', undefined].includes(processState(onB.pid)) ? true : undefined,
  );
  await until('one copy', () => (copies(job.marker).length === 1 ? true : undefined));
  const record = await until('every replaced copy struck off', async () => {
    const r = await store.job(job.id);
    return r?.replaced.length === 0 ? r : undefined;
  });
  assert.equal(record.host, again.address);
});

test("a checkpoint sealed with another agent's key is not restored, and not tried again at every look", async () => {
  const e = await etcd(1);
  const otherKey = join(lab.work, 'other.key');
  writeFileSync(otherKey, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  const a = await member(e.urls);
  const b = await lab.startAgent({
    cpus: null,
    extra: ['--etcd', e.urls.join(','), '--lease-ttl', String(HOST_TTL_S), '--image-key', otherKey],
  });
  const leader = await balancer(e.urls, 'b1');
  const store = new ClusterStore(e.urls);
  cleanup(() => store.close());
  const job = await counter(a, 'foreign');
  await checkpointed(store, job.id);
  await a.process.stop();
  killAndReap(job.pid);
  const failed = await until(
    'a failed restore',
    () => events(leader).find((x) => x.event === 'recovery' && x.outcome === 'failed'),
    15_000,
  );
  assert.ok(failed.event === 'recovery');
  assert.match(failed.error ?? '', /was not written by this agent|seal/);
  await new Promise((resolve) => setTimeout(resolve, 3000));
  const tries = events(leader).filter((x) => x.event === 'recovery').length;
  assert.equal(tries, 1, 'one try in 3 s, not one per look (every 500 ms)');
  assert.equal((await load(b)).jobs.length, 0);
  assert.equal(copies(job.marker).length, 0);
});

test('an agent stopped (SIGTERM) hands its checkpointed job over: checkpointed once more, restored elsewhere, nothing lost', async () => {
  const e = await etcd(1);
  const [a, b] = [await member(e.urls), await member(e.urls)];
  await balancer(e.urls, 'b1');
  const store = new ClusterStore(e.urls);
  cleanup(() => store.close());
  const job = await counter(a, 'handed');
  await checkpointed(store, job.id);
  const exited = new Promise((resolve) => a.process.child.once('exit', resolve));
  a.process.child.kill('SIGTERM');
  await exited;
  // Killed as its agent went (its parent-death signal): gone a moment after it.
  await until(
    'the job ended with its agent',
    () => (['Z', undefined].includes(processState(job.pid)) ? true : undefined),
    3000,
  );
  const before = counts(job.out).at(-1)!;
  await until(
    'the job restored on b',
    async () => ((await load(b)).jobs.length === 1 ? true : undefined),
    15_000,
  );
  const after = await until('counting again', () => {
    const n = counts(job.out);
    return n.length > 0 && n.at(-1)! > before + 5 ? n : undefined;
  });
  const restart = after.findIndex((v, k) => k > 0 && v <= after[k - 1]!);
  // Restored from a checkpoint taken as the agent stopped: at most the count in flight is lost.
  assert.ok(
    restart === -1 || after[restart - 1]! - after[restart]! <= 1,
    `${after[restart - 1]} then ${after[restart]}`,
  );
  assert.equal(copies(job.marker).length, 1);
});

test('failover: the leader killed mid-migration, a standby leads within 5 s and sees the move through: one copy', async (t) => {
  const e = await etcd(3);
  // A long host lease: the source agent stands still mid-move (FERRY_FAULT) without being given up.
  const a = await member(e.urls, 60, { cpus: 0.4, env: ['FERRY_FAULT=frozen:STOP'] });
  const b = await member(e.urls, 60, { cpus: 0.4 });
  const markers = ['one', 'two'].map((n) => `${n}-${randomBytes(4).toString('hex')}`);
  for (const m of markers) await run(lab, a, ['--', PYTHON, '-c', SPIN, m], m);
  await until('CPU time', async () =>
    (await load(a)).jobs.every((j) => j.cpuSeconds > 0.4) ? true : undefined,
  );
  const first = await balancer(e.urls, 'first');
  await until('first leads', () => (events(first).some((x) => x.event === 'elected') ? true : undefined));
  const standby = await balancer(e.urls, 'standby');
  // The source agent froze the job and stopped itself: the move is under way. The leader dies.
  await until('the move under way', () => (processState(a.process.pid) === 'T' ? true : undefined));
  const decision = events(first).find((x) => x.event === 'decision');
  assert.ok(decision?.event === 'decision', first.lines.join('\n'));
  await first.stop();
  const killed = Date.now();
  await until('the standby leads', () =>
    events(standby).some((x) => x.event === 'elected') ? true : undefined,
  );
  const took = Date.now() - killed;
  assert.ok(took <= 5000, `the standby led ${took} ms after the leader died`);
  t.diagnostic(`the standby led ${took} ms after the leader died (leadership TTL 3 s)`);
  process.kill(a.process.pid, 'SIGCONT');
  const adopted = await until('the move seen through', () =>
    events(standby).find((x) => x.event === 'outcome' && x.adopted === true),
  );
  assert.ok(adopted.event === 'outcome');
  assert.equal(adopted.job, decision.decision.job);
  assert.equal(adopted.outcome, 'moved', adopted.error);
  // No second move of it was begun while the first was in doubt.
  assert.equal(
    events(standby).filter((x) => x.event === 'decision' && x.decision.job === decision.decision.job).length,
    0,
  );
  const [onA, onB] = [await load(a), await load(b)];
  assert.deepEqual(
    onB.jobs.map((j) => j.id),
    [decision.decision.job],
  );
  assert.equal(onA.jobs.length, 1);
  for (const m of markers) assert.equal(copies(m).length, 1, `${m} runs once`);
  const store = new ClusterStore(e.urls);
  cleanup(() => store.close());
  assert.deepEqual(await store.intents(), [], 'no intent left');
});
