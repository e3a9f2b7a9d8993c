// ferry migrate dies or loses the target: never two copies, never none, never a silent end. Past
// the fence the source stays stopped whatever happens to ferry; ferry's guardian, or `ferry
// resolve`, settles the migration with the target: the copy runs there and the source is killed,
// or the source runs on.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { kill, SIG } from '../src/sys/signal.js';
import {
  api,
  migrateCli,
  PORT,
  runsFree,
  setUpLab,
  startAgentOn,
  targetClean,
  type AgentProc,
  type CliResult,
} from './helpers/agents.js';
import { cleanupAfterAll } from './helpers/cleanup.js';
import { runCli } from './helpers/cli.js';
import { setLink } from './helpers/netns.js';
import { traceState } from './helpers/processes.js';
import { childrenOf, killAndReap } from './helpers/reaper.js';
import { assertUntracked, startSelfChecking, type SelfChecking } from './helpers/self-check.js';
import { startStateFixture, type StateFixture } from './helpers/state-fixture.js';

const cleanup = cleanupAfterAll();
const lab = setUpLab(2, 'ferry-migf', cleanup);
let agents: AgentProc[];

async function started(): Promise<StateFixture> {
  const f = await startStateFixture(lab.dir());
  cleanup(() => f.stop());
  return f;
}

const alive = (pid: number): boolean => {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'latin1'));
  } catch {
    return false;
  }
};

/** The processes the target agent runs that came by migration. */
async function migratedIn(agent: AgentProc): Promise<number[]> {
  const { body } = await api<{ processes: { pid: number; origin: string; state: string }[] }>(
    agent.host,
    '/v1/processes',
  );
  return body.processes.filter((p) => p.origin === 'migration' && p.state === 'running').map((p) => p.pid);
}

test('agents start on two hosts', async () => {
  agents = [await startAgentOn(lab, lab.hosts[0]!), await startAgentOn(lab, lab.hosts[1]!)];
});

for (const point of ['fence', 'commit']) {
  test(`ferry migrate SIGKILLed at ${point === 'fence' ? 'the fence, before COMMIT' : 'COMMIT'}: one copy, at the target`, async () => {
    const f = await started();
    const r = await migrateCli(lab, lab.hosts[0]!, f.pid, lab.hosts[1]!, [], { env: { FERRY_FAULT: point } });
    assert.equal(r.signal, 'SIGKILL', r.stdout + r.stderr);
    // ferry's guardian (whose end ends the command's output) settled it with the target.
    assert.match(r.stderr, /runs on the target; killed it here/);
    for (let i = 0; i < 100 && alive(f.pid); i++) await sleep(20);
    assert.ok(!alive(f.pid), 'the source is gone');
    const copies = await migratedIn(agents[1]!);
    assert.equal(copies.length, 1, `copies at the target: ${copies.join(' ')}`);
    cleanup(() => killAndReap(copies[0]!));
    assert.match(await f.verify(copies[0]), /^PASS /);
    killAndReap(copies[0]!);
  });
}

test('ferry migrate SIGKILLed during post-copy: the copy at the target goes, the source runs on from where it was frozen', async () => {
  const d = await startSelfChecking(lab.dir(), 'dirty', ['64', '10', 'random'], cleanup);
  // Killed once its copy runs at the target and the first pages went there, long before the last.
  const r = await migrateCli(lab, lab.hosts[0]!, d.pid, lab.hosts[1]!, ['--mode', 'post-copy'], {
    env: { FERRY_FAULT: 'postcopy@2' },
  });
  assert.equal(r.signal, 'SIGKILL', r.stdout + r.stderr);
  // The target cannot go on without the source's pages: it killed its copy, and the guardian,
  // told so, let the source run on.
  assert.match(r.stderr, /no copy of process \d+ runs on the target .*; it runs on here/);
  runsFree(d.pid);
  assert.match(await d.check(), /^CHECK ok \d+$/);
  assert.deepEqual(await migratedIn(agents[1]!), []);
  await targetClean(agents[1]!);
});

test('the target lost after the fence: in doubt, the source stopped; `ferry resolve` lets it run on', async () => {
  const f = await started();
  let ferry = 0;
  const migrating = migrateCli(lab, lab.hosts[0]!, f.pid, lab.hosts[1]!, ['--timeout', '3000'], {
    env: { FERRY_FAULT: 'fence:STOP' },
    onStart: (pid) => (ferry = pid),
  });
  // ferry stands still between the fence and COMMIT: the target is cut off then.
  for (let i = 0; i < 500 && !(ferry > 0 && traceState(ferry).state === 'T'); i++) await sleep(20);
  setLink(lab.hosts[1]!, false);
  cleanup(() => setLink(lab.hosts[1]!, true));
  kill(ferry, SIG.SIGCONT);
  const r = await migrating;
  assert.equal(r.code, 1, r.stdout);
  const error = (JSON.parse(r.stdout) as { error: { code: string; message: string } }).error;
  assert.equal(error.code, 'FERRY_MIGRATION_IN_DOUBT');
  const resolve = new RegExp(`ferry resolve ${f.pid} --migration \\S+ --to ${lab.hosts[1]!.addr}:${PORT}`);
  assert.match(error.message, resolve);
  assert.deepEqual(traceState(f.pid), { state: 'T', tracerPid: 0 }, 'the source is stopped and free');
  // The target gives the held copy up once no commit came within its idle timeout (2 s).
  await sleep(2500);
  setLink(lab.hosts[1]!, true);
  const args = resolve.exec(error.message)![0].split(' ').slice(1);
  const settled = await runCli([...args, '--token-file', lab.tokenFile, '--json'], {
    wrap: lab.hosts[0]!.exec,
  });
  assert.equal(settled.code, 0, settled.stdout + settled.stderr);
  assert.equal((JSON.parse(settled.stdout) as { outcome: string }).outcome, 'kept');
  runsFree(f.pid);
  assert.match(await f.verify(), /^PASS /);
  await targetClean(agents[1]!);
});

/** The migration failed before the fence: the source runs on, untracked, every page right. */
async function failedAndRunsOn(r: CliResult, d: SelfChecking): Promise<void> {
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const error = (JSON.parse(r.stdout) as { error: { code: string; message: string } }).error;
  assert.equal(error.code, 'FERRY_MIGRATION_FAILED');
  assert.match(error.message, /the process runs on here$/);
  runsFree(d.pid);
  assertUntracked(d.pid);
  assert.match(await d.check(d.pid), /^CHECK ok \d+$/);
}

test("the target's staging killed while a pre-copy round goes into it: the migration fails, the source runs on", async () => {
  // The round's pages go straight into the stub's staging, never to the target's disk: once the
  // stub holds some, losing it must fail the migration, not restore the process without them. The
  // target's agent (one of its own) stops itself at its fourth placement, when the stub is killed.
  const agent = await startAgentOn(lab, lab.hosts[1]!, lab.dir(), {
    port: PORT + 1,
    env: { FERRY_FAULT: 'place@4:STOP' },
  });
  const d = await startSelfChecking(lab.dir(), 'dirty', ['64', '0'], cleanup);
  const to = `${lab.hosts[1]!.addr}:${PORT + 1}`;
  const migrating = migrateCli(lab, lab.hosts[0]!, d.pid, to, ['--mode', 'pre-copy']);
  const at = agent.process.pid;
  for (let i = 0; i < 1000 && traceState(at).state !== 'T'; i++) await sleep(10);
  assert.equal(traceState(at).state, 'T', 'the agent stopped at its fourth placement');
  const stubs = childrenOf(at);
  assert.equal(stubs.length, 1, `the agent's children: ${stubs.join(' ')}`);
  killAndReap(stubs[0]!);
  kill(at, SIG.SIGCONT);
  const r = await migrating;
  await failedAndRunsOn(r, d);
  await targetClean(agent);
  assert.deepEqual(childrenOf(at), [], 'nothing held at the target');
  await agent.process.stop();
});

test('packets to the target dropped at the source during pre-copy: the migration fails, the source runs on', async () => {
  const d = await startSelfChecking(lab.dir(), 'dirty', ['128', '10'], cleanup);
  const ns = lab.hosts[0]!.ns;
  const nft = (...script: string[]): void => void execFileSync('ip', ['netns', 'exec', ns, 'nft', ...script]);
  const migrating = migrateCli(lab, lab.hosts[0]!, d.pid, lab.hosts[1]!, [
    '--mode',
    'pre-copy',
    '--timeout',
    '5000',
  ]);
  await sleep(300);
  nft(
    `add table inet ferrytest; add chain inet ferrytest out { type filter hook output priority 0; }; ` +
      `add rule inet ferrytest out ip daddr ${lab.hosts[1]!.addr} drop`,
  );
  let dropping = true;
  const lift = (): void => {
    if (dropping) nft('delete table inet ferrytest');
    dropping = false;
  };
  cleanup(lift);
  const r = await migrating;
  lift();
  await failedAndRunsOn(r, d);
  await targetClean(agents[1]!);
});
