// Managed jobs and balancing end to end, on agents on loopback, each with a CPU quota of its own
// cgroup: `ferry run`, load reports under the quota, moves on request, `ferry balancer` (and one
// killed mid-migration), an idle agent asking for work, and `ferry cluster status`.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';
import type { HistoryEntry } from '../../src/agent/jobs.js';
import { calibrateJob, runBatch, startLocalCluster } from '../../src/cluster/local.js';
import { findCgroupMounts } from '../../src/cluster/cgroup.js';
import { callAgent } from '../../src/migrate/client.js';
import { cleanupAfterAll } from '../helpers/cleanup.js';
import { runCli } from '../helpers/cli.js';
import { CLI, PYTHON } from '../helpers/paths.js';
import { processState, startProcess } from '../helpers/processes.js';
import { childrenOf, killAndReap, reapOrphans, treeOf } from '../helpers/reaper.js';
import {
  clusterLab,
  CPUS,
  endpoint,
  load,
  run as runJob,
  SPIN,
  TOKEN,
  until,
  type ClusterLab,
  type TestAgent,
} from '../helpers/cluster.js';

const cleanup = cleanupAfterAll();
let lab: ClusterLab;
let work: string;
let tokenFile: string;

before(() => {
  lab = clusterLab('ferry-cluster-', cleanup);
  ({ work, tokenFile } = lab);
});

const startAgent = (extra: string[] = [], cpus = CPUS, env: string[] = []): Promise<TestAgent> =>
  lab.startAgent({ extra, cpus, env });

const run = (a: TestAgent, args: string[], name?: string) => runJob(lab, a, args, name);

/** `ferry run --agent <several>` of a spinning job: where it was placed. */
async function placeSpinner(peers: string): Promise<string> {
  const r = await runCli([
    'run',
    '--agent',
    peers,
    '--token-file',
    tokenFile,
    '--json',
    '--',
    PYTHON,
    '-c',
    SPIN,
  ]);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { agent: string }).agent;
}

test('ferry run starts a job under the agent: only stdio, the caller cwd and environment, in its cgroup', async () => {
  const a = await startAgent();
  const dir = mkdtempSync(join(work, 'run-'));
  const out = join(dir, 'out');
  const r = await runCli(
    [
      ...['run', '--agent', a.address, '--token-file', tokenFile, '--name', 'probe', '--stdout', out, '--'],
      ...[
        PYTHON,
        '-c',
        'import os; print(os.getcwd()); print(os.environ["FERRY_PROBE"]); print(os.listdir("/proc/self/fd"))',
      ],
    ],
    { env: { FERRY_PROBE: 'from the caller' } },
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^started job (\S+) \(probe\) as pid (\d+) on /);
  const lines = (
    await until('output', () =>
      readFileSync(out, 'utf8').split('\n').length > 3 ? readFileSync(out, 'utf8') : undefined,
    )
  ).split('\n');
  assert.equal(lines[0], process.cwd());
  assert.equal(lines[1], 'from the caller');
  // 0, 1, 2, and the one listdir opened: nothing of the agent's.
  assert.deepEqual((JSON.parse(lines[2]!.replace(/'/g, '"')) as string[]).sort(), ['0', '1', '2', '3']);

  // A job with a child: killed, both go.
  const spin = await run(
    a,
    ['--', PYTHON, '-c', `import subprocess\nsubprocess.Popen(["sleep", "1000"])\n${SPIN}`],
    'spin',
  );
  const child = await until('the job child', () => childrenOf(spin.pid)[0]);
  const procs = readFileSync(
    join(findCgroupMounts().v1Cpu ?? findCgroupMounts().v2!.root, a.cgroup, 'cgroup.procs'),
    'utf8',
  );
  assert.ok(procs.split('\n').includes(String(spin.pid)), `${spin.pid} in ${procs}`);
  const killed = await callAgent<{ killed: boolean }>(
    endpoint(a),
    'POST',
    `/v1/jobs/${spin.id}/kill`,
    {},
    10_000,
  );
  assert.equal(killed.killed, true);
  assert.deepEqual((await load(a)).jobs, []);
  // Dead, it comes to this test (a subreaper) to be reaped.
  await until('the child gone', () => (['Z', undefined].includes(processState(child)) ? true : undefined));
  killAndReap(child);
});

test('ferry run --checkpoint-every checkpoints the job into the shared directory while it runs; they go when it ends', async () => {
  const a = await startAgent();
  const shared = mkdtempSync(join(work, 'shared-'));
  const job = await run(a, [
    ...['--checkpoint-every', '1s', '--shared-dir', shared, '--'],
    ...[PYTHON, '-c', 'import time\nfor i in range(40):\n    time.sleep(0.1)'],
  ]);
  const images = await until('a checkpoint', () => {
    const dir = join(shared, job.id);
    const made = existsSync(dir)
      ? readdirSync(dir).filter((n) => existsSync(join(dir, n, 'manifest.json')))
      : [];
    return made.length > 0 ? made : undefined;
  });
  assert.match(images[0]!, /^\d{6}$/);
  await until('the job ended', async () => ((await load(a)).jobs.length === 0 ? true : undefined));
  await until('its checkpoints gone', () => (existsSync(join(shared, job.id)) ? undefined : true));
});

test('ferry run refuses what it cannot do, in one line', async () => {
  const a = await startAgent();
  const cases: [string[], RegExp][] = [
    [['run', '--', 'true'], /--agent/],
    [['run', '--agent', a.address, '--token-file', tokenFile], /wrong number of arguments/],
    [
      ['run', '--agent', a.address, '--token-file', tokenFile, '--', 'no-such-program-here'],
      /no such program on PATH/,
    ],
    [
      ['run', '--agent', a.address, '--token-file', tokenFile, '--name', '../x', '--', 'true'],
      /"name" must match/,
    ],
  ];
  for (const [args, message] of cases) {
    const r = await runCli(args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

test('load under a CPU quota: capacity, demand and CPU share of the job; /metrics says the same', async () => {
  const a = await startAgent();
  const job = await run(a, ['--', PYTHON, '-c', SPIN], 'spinner');
  const report = await until('a steady load', async () => {
    const l = await load(a);
    const j = l.jobs[0];
    return j && j.cpuSeconds > 1 && j.demand > 0.8 ? l : undefined;
  });
  assert.equal(report.host.capacity, CPUS);
  assert.deepEqual(report.host.cgroup, {
    path: a.cgroup,
    version: findCgroupMounts().v2?.cpu ? 2 : 1,
    quotaCores: CPUS,
  });
  const [j] = report.jobs;
  assert.equal(j!.id, job.id);
  assert.equal(j!.pid, job.pid);
  assert.ok(j!.cpuRate > 0.2 && j!.cpuRate < CPUS * 1.25, `CPU share ${j!.cpuRate} within the quota`);
  assert.ok(report.host.load > 2, `load ${report.host.load}: one runnable thread over ${CPUS} cores`);
  assert.ok(j!.rssBytes > 1 << 20);
  assert.equal(typeof report.host.memAvailableBytes, 'number');
  if (findCgroupMounts().v2) assert.equal(typeof report.host.pressure, 'number', 'PSI read from the v2 twin');
  const r = await fetch(`http://${a.address}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
  const metrics = await r.text();
  assert.match(metrics, new RegExp(`^ferry_host_capacity_cores ${CPUS}$`, 'm'));
  assert.match(metrics, new RegExp(`^ferry_job_cpu_cores\\{job="${job.id}"\\} 0\\.\\d+`, 'm'));
});

test('a job moved on request lands with its id, age and hops; a pinned one stays', async () => {
  const [a, b] = [await startAgent(), await startAgent()];
  const job = await run(a, ['--', PYTHON, '-c', SPIN], 'mover');
  const pinned = await run(a, ['--no-migrate', '--', PYTHON, '-c', SPIN], 'pinned');
  await until('CPU time', async () =>
    (await load(a)).jobs.every((j) => j.cpuSeconds > 0.5) ? true : undefined,
  );
  const before = (await load(a)).jobs.find((j) => j.id === job.id)!;
  const moved = await callAgent<HistoryEntry>(
    endpoint(a),
    'POST',
    `/v1/jobs/${job.id}/migrate`,
    { to: b.address, reason: 'asked by the test' },
    60_000,
  );
  assert.equal(moved.outcome, 'moved', moved.error);
  assert.ok(moved.downtimeMs! > 0 && moved.bytes! > 0);
  const there = (await load(b)).jobs.find((j) => j.id === job.id);
  assert.ok(there, 'the job runs at the target');
  assert.equal(there.name, 'mover');
  assert.deepEqual(there.hops, [a.address]);
  assert.equal(before.dirtySource, 'guess');
  assert.equal(there.dirtySource, 'pre-copy', 'the move measured its writes, for its next move');
  assert.ok(there.cpuSeconds >= before.cpuSeconds, 'its CPU time so far travels with it');
  assert.ok(there.ageMs >= before.ageMs);
  assert.ok(there.sinceMoveMs! < there.ageMs);
  assert.ok(!(await load(a)).jobs.some((j) => j.id === job.id), 'one copy only');
  const procs = readFileSync(
    join(findCgroupMounts().v1Cpu ?? findCgroupMounts().v2!.root, b.cgroup, 'cgroup.procs'),
    'utf8',
  );
  assert.ok(procs.split('\n').includes(String(there.pid)), 'in the target agent cgroup');

  const refused = await fetch(`http://${a.address}/v1/jobs/${pinned.id}/migrate`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ to: b.address }),
  });
  assert.equal(refused.status, 409);
  const malformed = await fetch(`http://${a.address}/v1/jobs/${pinned.id}/migrate`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ to: 'nowhere' }),
  });
  assert.equal(malformed.status, 400, 'a malformed target is the request at fault, not a move that failed');
  assert.equal(((await refused.json()) as { error: { code: string } }).error.code, 'FERRY_BUSY');
  const history = (await load(a)).history;
  assert.deepEqual(
    history.map((h) => [h.name, h.outcome, h.reason]),
    [
      ['mover', 'moved', 'asked by the test'],
      ['pinned', 'refused', 'asked'],
    ],
  );
});

test('the balancer moves jobs off a busy agent and every job checks its result', async () => {
  const dir = mkdtempSync(join(work, 'batch-'));
  const cluster = await startLocalCluster({ hosts: 2, cpus: 0.3, dir });
  cleanup(() => cluster.stop());
  const result = await runBatch(cluster, {
    jobs: ['a', 'b', 'c'].map((name) => ({ name, cpuSeconds: 1.5 })),
    host: 0,
    balance: true,
    cpus: 0.3,
    iterationsPerSecond: await calibrateJob(),
    dir: join(dir, 'jobs'),
  });
  assert.ok(
    result.jobs.every((j) => j.ok),
    JSON.stringify(result.jobs),
  );
  const moved = result.migrations.filter((m) => m.outcome === 'moved');
  assert.ok(moved.length >= 1, JSON.stringify(result.migrations));
  assert.ok(moved.every((m) => m.from === cluster.peers[0] && /^load \d/.test(m.reason)));
  assert.ok(result.jobs.some((j) => j.hosts.length > 1 && j.hosts[1] === cluster.peers[1]));
});

test('ferry balancer --dry-run only says; killed mid-migration, it loses nothing; cluster status shows it', async () => {
  const [a, b] = [await startAgent(), await startAgent()];
  for (const name of ['one', 'two', 'three']) await run(a, ['--', PYTHON, '-c', SPIN], name);
  await until('CPU time', async () =>
    (await load(a)).jobs.every((j) => j.cpuSeconds > 0.4) ? true : undefined,
  );
  const peers = `${a.address},${b.address}`;
  const balancerArgs = [
    'balancer',
    '--peers',
    peers,
    '--token-file',
    tokenFile,
    '--interval',
    '500',
    '--json',
  ];
  const dry = await startProcess(CLI, [...balancerArgs, '--dry-run']);
  const decision = JSON.parse(dry.readyLine) as {
    event: string;
    dryRun: boolean;
    decision: { from: string; to: string };
  };
  await dry.stop();
  assert.deepEqual(
    [decision.event, decision.dryRun, decision.decision.from, decision.decision.to],
    ['decision', true, a.address, b.address],
  );
  assert.equal((await load(a)).jobs.length, 3, 'nothing moved');

  // The balancer dies as soon as the agent has begun the move: the agent carries it out all the same.
  const balancer = await startProcess(CLI, balancerArgs);
  await until('a move begun', async () => ((await load(a)).history.length > 0 ? true : undefined));
  await balancer.stop();
  const entry = await until('the end of the move', async () => {
    const h = (await load(a)).history.at(-1);
    return h && h.outcome !== 'moving' ? h : undefined;
  });
  assert.equal(entry.outcome, 'moved', entry.error);
  const [onA, onB] = [(await load(a)).jobs, (await load(b)).jobs];
  assert.equal(onA.length + onB.length, 3, 'every job runs once');
  assert.deepEqual(
    onB.map((j) => j.id),
    [entry.job],
  );

  const status = await runCli(['cluster', 'status', '--peers', peers, '--token-file', tokenFile, '--json']);
  assert.equal(status.code, 0, status.stderr);
  const s = JSON.parse(status.stdout) as {
    hosts: { peer: string; capacity: number }[];
    jobs: { host: string }[];
    last: HistoryEntry[];
  };
  assert.deepEqual(
    s.hosts.map((h) => [h.peer, h.capacity]),
    [
      [a.address, CPUS],
      [b.address, CPUS],
    ],
  );
  assert.equal(s.jobs.filter((j) => j.host === b.address).length, 1);
  assert.equal(s.last.at(-1)?.outcome, 'moved');
  const text = await runCli(['cluster', 'status', '--peers', peers, '--token-file', tokenFile]);
  assert.match(text.stdout, /last migrations: time/);
  assert.match(text.stdout, new RegExp(`${a.address} -> ${b.address}\\s+moved`));

  // Placement at birth: of two agents, the one where the job adds the least load.
  assert.equal(await placeSpinner(peers), b.address);
});

test('an idle agent asks a busy one for work (--pull-from)', async () => {
  const a = await startAgent();
  for (const name of ['p1', 'p2', 'p3']) await run(a, ['--', PYTHON, '-c', SPIN], name);
  const idle = await startAgent(['--pull-from', a.address]);
  const got = await until('a job pulled', async () => (await load(idle)).jobs[0], 30_000);
  assert.deepEqual(got.hops, [a.address]);
  // The source records the outcome once the target has said the job runs: a moment after.
  const entry = await until('the outcome', async () =>
    (await load(a)).history.find((h) => h.job === got.id && h.outcome !== 'moving'),
  );
  assert.equal(entry.to, idle.address);
  assert.equal(entry.outcome, 'moved');
});

test('a job that ends while being moved is accounted for: nothing runs anywhere', async () => {
  // The source agent stops itself once it has frozen the job (FERRY_FAULT), and the job is killed then.
  const a = await startAgent([], CPUS, ['FERRY_FAULT=frozen:STOP']);
  const b = await startAgent();
  const job = await run(a, ['--', PYTHON, '-c', SPIN], 'doomed');
  const moving = callAgent<HistoryEntry>(
    endpoint(a),
    'POST',
    `/v1/jobs/${job.id}/migrate`,
    { to: b.address },
    60_000,
  );
  await until('the agent stopped at the fault', () =>
    processState(a.process.pid) === 'T' ? true : undefined,
  );
  killAndReap(job.pid);
  process.kill(a.process.pid, 'SIGCONT');
  const entry = await moving;
  assert.equal(entry.outcome, 'exited', JSON.stringify(entry));
  assert.deepEqual((await load(a)).jobs, []);
  assert.deepEqual((await load(b)).jobs, []);
  assert.equal((await load(a)).history.at(-1)?.outcome, 'exited');
});

test('ferry drain empties a host under load, one job at a time, none lost; undrain opens it again', async () => {
  const [a, b, c] = [await startAgent(), await startAgent(), await startAgent()];
  const started = [];
  for (const name of ['d1', 'd2', 'd3']) started.push(await run(a, ['--', PYTHON, '-c', SPIN], name));
  const peers = [a.address, b.address, c.address].join(',');
  const drained = await runCli(['drain', a.address, '--peers', peers, '--token-file', tokenFile]);
  assert.equal(drained.code, 0, drained.stderr);
  assert.match(drained.stdout, new RegExp(`${a.address} is drained: 3 job\\(s\\) moved, none left`));
  assert.equal(drained.stdout.match(/ moved d\d /g)?.length, 3);
  assert.deepEqual((await load(a)).jobs, []);
  const elsewhere = [...(await load(b)).jobs, ...(await load(c)).jobs];
  assert.deepEqual(
    elsewhere.map((j) => j.id).sort(),
    started.map((j) => j.id).sort(),
    'every job runs, once',
  );
  assert.ok(elsewhere.every((j) => j.hops.join() === a.address));
  assert.ok((await load(b)).jobs.length >= 1 && (await load(c)).jobs.length >= 1, 'spread by load');
  assert.equal((await load(a)).host.drained, true);

  const refused = await runCli(['run', '--agent', a.address, '--token-file', tokenFile, '--', 'true']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /this agent is drained: it starts no job/);
  assert.notEqual(await placeSpinner(peers), a.address, 'placement passes it by');
  const status = await runCli(['cluster', 'status', '--peers', peers, '--token-file', tokenFile]);
  assert.match(status.stdout, new RegExp(`${a.address}.*drained`));

  const undrained = await runCli(['undrain', a.address, '--token-file', tokenFile]);
  assert.equal(undrained.code, 0, undrained.stderr);
  assert.equal((await load(a)).host.drained, false);
  await run(a, ['--', PYTHON, '-c', SPIN], 'back');
  assert.equal((await load(a)).jobs.length, 1);
});

test('ferry demo cluster stopped with Ctrl-C mid-run leaves no agent, job, cgroup or directory behind', async () => {
  const demo = await startProcess(CLI, ['demo', 'cluster']);
  cleanup(() => demo.stop());
  await until(
    'jobs running',
    () => (demo.lines.some((l) => /jobs per host/.test(l)) ? true : undefined),
    60_000,
  );
  const started = treeOf(demo.pid).slice(1); // its agents and their jobs
  assert.ok(started.length >= 3, `agents and jobs: ${started.join(' ')}`);
  const exited = new Promise<number | null>((resolve) => demo.child.once('exit', (code) => resolve(code)));
  demo.child.kill('SIGINT');
  assert.notEqual(await exited, 0);
  await reapOrphans(started);
  assert.deepEqual(
    started.filter((pid) => existsSync(`/proc/${pid}`)),
    [],
    'everything it started is gone',
  );
  const mounts = findCgroupMounts();
  const root = mounts.v1Cpu ?? mounts.v2!.root;
  assert.deepEqual(
    readdirSync(root).filter((n) => n.startsWith(`ferry-local-${demo.pid}-`)),
    [],
  );
});
