// npm run bench:faults [-- --trials 100 --classes <a,b,...>]: fault injection, as an operator meets
// faults, against what ferry promises: no process lost, none running twice, none corrupt. Each
// class injects one kind of fault at varied moments, each trial into a fresh self-checking process
// (its memory, registers, signal mask and sleeps), on hosts made of network namespaces with an
// agent each; then it counts what became of the process:
//   clean       one copy runs, and passes its own check (the source, or the migrated copy)
//   in doubt    the source is left stopped for `ferry resolve`, which then settled it to one copy
//   lost        no copy runs
//   duplicated  two copies run
//   corrupt     the copy that runs fails its check
// FAULT HIT counts the trials in which the fault landed (ferry did not simply succeed first). A
// class that fails to run a trial at all says so; the others are printed whatever.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { renderTable } from '../../src/cli/format.js';
import { kill, SIG } from '../../src/sys/signal.js';
import {
  api,
  corruptingRelay,
  makeLab,
  PORT,
  startAgentOn,
  type AgentProc,
  type Lab,
} from '../../test/helpers/agents.js';
import { runCli, type CliResult } from '../../test/helpers/cli.js';
import { setLink } from '../../test/helpers/netns.js';
import { becomeSubreaper, killAndReap } from '../../test/helpers/reaper.js';
import { startSelfChecking, type SelfChecking } from '../../test/helpers/self-check.js';
import { benchArgs } from '../stats.js';

const { values } = benchArgs({
  trials: { type: 'string', default: '100' },
  classes: { type: 'string', default: '' },
});

type Outcome = 'clean' | 'in doubt' | 'lost' | 'duplicated' | 'corrupt';

interface Trial {
  /** The fixture, started for this trial. */
  d: SelfChecking;
  /** What the trial did, for the record of a bad outcome. */
  notes: string[];
}

interface FaultClass {
  name: string;
  what: string;
  /** Run one trial (the n-th of the class) on a fresh fixture; the migration's id, if it made one. */
  run(t: Trial, n: number): Promise<CliResult | undefined>;
  /** Whether the process may have moved to the target (migrations). */
  moves: boolean;
}

const steps: (() => void | Promise<void>)[] = [];
const cleanup = (step: () => void | Promise<void>): void => void steps.push(step);
becomeSubreaper();
const lab: Lab = makeLab(2, 'ferry-faults', cleanup);
const [source, target] = lab.hosts as [Lab['hosts'][0], Lab['hosts'][0]];
let agents: AgentProc[] = [];

/** A fresh fixture: 8 MiB rewritten at 2 MB/s, checking every page on SIGUSR1. */
async function fixture(): Promise<SelfChecking> {
  const home = lab.dir();
  const fixtureSteps: (() => Promise<void>)[] = [];
  const d = await startSelfChecking(home, 'dirty', ['8', '2'], (step) => fixtureSteps.push(step));
  cleanup(async () => {
    for (const s of fixtureSteps) await s();
  });
  return d;
}

const stat = (pid: number): string | undefined => {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'latin1').split(') ')[1]?.[0];
  } catch {
    return undefined;
  }
};
const tracer = (pid: number): number =>
  Number(/^TracerPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))?.[1] ?? 0);

/**
 * Send `signal` to `who()` a random 0-20 ms after `pid` is first seized (its tracer appears), with
 * sub-millisecond aim: busy-waiting, as ferry runs in a process of its own.
 */
function afterSeize(pid: number, who: () => number, signal: number, until: Promise<unknown>): void {
  let over = false;
  void until.then(() => (over = true));
  const deadline = Date.now() + 30_000;
  const poll = (): void => {
    if (over || Date.now() > deadline) return;
    let seized = false;
    try {
      seized = tracer(pid) !== 0;
    } catch {
      return; // gone
    }
    if (!seized) return void setImmediate(poll);
    const fire = process.hrtime.bigint() + BigInt(Math.floor(Math.random() * 20_000_000));
    while (process.hrtime.bigint() < fire);
    try {
      kill(who(), signal);
    } catch {
      // over already
    }
  };
  setImmediate(poll);
}

/** `ferry dump --leave-running` of the trial's process, started and watched. */
function dumpWith(
  t: Trial,
  env?: Record<string, string>,
  onStart?: (pid: number) => void,
): Promise<CliResult> {
  return runCli(['dump', String(t.d.pid), '-D', `${lab.dir()}/image`, '--leave-running'], { env, onStart });
}

/** `ferry migrate` of the trial's process from `source` to `target`. */
function migrateWith(
  t: Trial,
  extra: string[] = [],
  options: { env?: Record<string, string>; onStart?: (pid: number) => void; to?: string } = {},
): Promise<CliResult> {
  const to = options.to ?? `${target.addr}:${PORT}`;
  return runCli(['migrate', String(t.d.pid), '--to', to, '--token-file', lab.tokenFile, '--json', ...extra], {
    wrap: source.exec,
    env: options.env,
    onStart: options.onStart,
  });
}

function signalledAfterSeize(
  name: string,
  signal: 'SIGKILL' | 'SIGINT' | 'SIGTERM',
  mode: 'dump' | 'migrate',
): FaultClass {
  return {
    name,
    what: `${signal} to ferry ${mode} 0-20 ms after it seizes the process`,
    moves: mode === 'migrate',
    run(t) {
      let ferry = 0;
      const onStart = (pid: number): void => void (ferry = pid);
      const running = mode === 'dump' ? dumpWith(t, undefined, onStart) : migrateWith(t, [], { onStart });
      afterSeize(t.d.pid, () => ferry, SIG[signal], running);
      return running;
    },
  };
}

const nft = (host: Lab['hosts'][0], script: string): void =>
  void execFileSync('ip', ['netns', 'exec', host.ns, 'nft', script]);

/** Drop the packets between the hosts at `at`, after a random 0-400 ms into a pre-copy migration. */
function linkCut(name: string, at: 'source' | 'target'): FaultClass {
  return {
    name,
    what: `packets between the hosts dropped at the ${at} (nftables), 0-400 ms into a pre-copy migration`,
    moves: true,
    async run(t) {
      const host = at === 'source' ? source : target;
      const peer = at === 'source' ? target.addr : source.addr;
      const running = migrateWith(t, ['--mode', 'pre-copy', '--timeout', '3000']);
      await sleep(Math.random() * 400);
      nft(
        host,
        `add table inet faults; add chain inet faults out { type filter hook output priority 0; }; add rule inet faults out ip daddr ${peer} drop`,
      );
      try {
        return await running;
      } finally {
        nft(host, 'delete table inet faults');
      }
    },
  };
}

const CLASSES: FaultClass[] = [
  signalledAfterSeize('dump-kill', 'SIGKILL', 'dump'),
  signalledAfterSeize('dump-int', 'SIGINT', 'dump'),
  signalledAfterSeize('dump-term', 'SIGTERM', 'dump'),
  {
    name: 'dump-kill-remote',
    what: 'SIGKILL to ferry dump at its n-th ptrace resume (every one in turn: the remote calls)',
    moves: false,
    run: (t, n) => dumpWith(t, { FERRY_FAULT: `resume@${(n % 12) + 1}` }),
  },
  {
    name: 'agent-dump-kill',
    what: 'SIGKILL to the agent 0-20 ms after its POST /v1/dump seizes the process',
    moves: false,
    async run(t) {
      const agent = agents[0]!;
      const body = JSON.stringify({ pid: t.d.pid, leaveRunning: true });
      const request = fetch(`http://${agent.host.addr}:${PORT}/v1/dump`, {
        method: 'POST',
        headers: { authorization: `Bearer ${agentToken()}`, 'content-type': 'application/json' },
        body,
      }).catch(() => undefined);
      afterSeize(t.d.pid, () => agentPid(agent), SIG.SIGKILL, request);
      const answer = await request;
      if (answer?.ok) return { code: 0, signal: null, stdout: '', stderr: '' };
      await agent.process.stop(); // reaped
      agents[0] = await startAgentOn(lab, source, agent.dataDir);
      return { code: null, signal: 'SIGKILL', stdout: '', stderr: 'the agent was killed' };
    },
  },
  signalledAfterSeize('migrate-kill', 'SIGKILL', 'migrate'),
  signalledAfterSeize('migrate-int', 'SIGINT', 'migrate'),
  signalledAfterSeize('migrate-term', 'SIGTERM', 'migrate'),
  {
    name: 'migrate-kill-commit',
    what: 'SIGKILL to ferry migrate at its fence (before COMMIT) or just after COMMIT, in turn',
    moves: true,
    run: (t, n) => migrateWith(t, [], { env: { FERRY_FAULT: n % 2 ? 'commit' : 'fence' } }),
  },
  {
    name: 'target-agent-kill',
    what: 'SIGKILL to the target agent 0-300 ms into a pre-copy migration',
    moves: true,
    async run(t) {
      const running = migrateWith(t, ['--mode', 'pre-copy']);
      await sleep(Math.random() * 300);
      await agents[1]!.process.stop();
      const r = await running;
      agents[1] = await startAgentOn(lab, target, agents[1]!.dataDir);
      return r;
    },
  },
  linkCut('link-cut-source', 'source'),
  linkCut('link-cut-target', 'target'),
  {
    name: 'target-disk-full',
    what: 'a hybrid migration (its round goes to disk) to an agent whose data directory (a 4 MiB tmpfs) fills up',
    moves: true,
    run: (t) => migrateWith(t, ['--mode', 'hybrid'], { to: `${target.addr}:${PORT + 1}` }),
  },
  {
    name: 'flipped-byte',
    what: 'one byte flipped in flight, somewhere in the first 64 KiB of the stream',
    moves: true,
    async run(t) {
      // One byte flipped somewhere in the first 64 KiB forwarded.
      const relay = await corruptingRelay(source, target, Math.floor(Math.random() * 65536));
      try {
        return await migrateWith(t, [], { to: relay.to });
      } finally {
        relay.close();
      }
    },
  },
];

const agentToken = (): string => readFileSync(lab.tokenFile, 'latin1').split('\n')[0]!;
/** The agent runs as `ip netns exec ... ferry agent`, which execs it: the same PID. */
const agentPid = (agent: AgentProc): number => agent.process.pid;

/** The copies of the trial's process that run at the target, by migration. */
async function copiesAtTarget(before: Set<number>): Promise<number[]> {
  try {
    const { body } = await api<{ processes: { pid: number; origin: string; state: string }[] }>(
      target,
      '/v1/processes',
    );
    return body.processes
      .filter((p) => p.origin === 'migration' && p.state === 'running' && !before.has(p.pid))
      .map((p) => p.pid);
  } catch {
    return [];
  }
}

/**
 * The copies at the target: those its agent runs, and the one `ferry migrate` said it made (an
 * agent restarted since knows nothing of it, and it runs on without the agent).
 */
async function copies(r: CliResult | undefined, before: Set<number>): Promise<number[]> {
  const found = new Set(await copiesAtTarget(before));
  try {
    const said = (JSON.parse(r?.stdout ?? '') as { targetPid?: number }).targetPid;
    if (said !== undefined && running(said)) found.add(said);
  } catch {
    // no result: the migration did not complete
  }
  return [...found];
}

/** Whether a running copy passes its own check. */
async function checks(t: Trial, pid: number): Promise<boolean> {
  try {
    return (await t.d.check(pid)).startsWith('CHECK ok');
  } catch {
    return false;
  }
}

const running = (pid: number): boolean => {
  const s = stat(pid);
  return s !== undefined && s !== 'Z' && s !== 'X' && s !== 'T' && s !== 't';
};

/** What became of the trial's process once ferry (and its guardian) are done. */
async function judge(
  t: Trial,
  c: FaultClass,
  r: CliResult | undefined,
  before: Set<number>,
): Promise<Outcome> {
  let outcome: Outcome | undefined;
  // Past the fence with ferry gone or the target lost, the source waits stopped for `ferry resolve`.
  for (let i = 0; i < 200 && stat(t.d.pid) !== undefined && tracer(t.d.pid) !== 0; i++) await sleep(10);
  if (stat(t.d.pid) === 'T') {
    const text = `${r?.stdout ?? ''}${r?.stderr ?? ''}`;
    const command = /ferry resolve \d+ --migration \S+ --to \S+?(?=`)/.exec(text)?.[0];
    t.notes.push(`in doubt: ${command ?? 'no resolve command given'}`);
    if (!command) return 'lost';
    const settled = await runCli([...command.split(' ').slice(1), '--token-file', lab.tokenFile], {
      wrap: source.exec,
    });
    t.notes.push(`resolve: ${settled.stdout.trim()}${settled.stderr.trim()}`);
    outcome = 'in doubt';
  }
  const here = running(t.d.pid);
  const there = c.moves ? await copies(r, before) : [];
  if (here && there.length > 0) return 'duplicated';
  const alive = here ? [t.d.pid] : there;
  if (alive.length === 0) return 'lost';
  if (alive.length > 1) return 'duplicated';
  if (!(await checks(t, alive[0]!))) return 'corrupt';
  return outcome ?? 'clean';
}

async function runClass(
  c: FaultClass,
  trials: number,
): Promise<Record<Outcome, number> & { hit: number; errors: string[] }> {
  const counts = {
    clean: 0,
    'in doubt': 0,
    lost: 0,
    duplicated: 0,
    corrupt: 0,
    hit: 0,
    errors: [] as string[],
  };
  for (let n = 0; n < trials; n++) {
    const t: Trial = { d: await fixture(), notes: [] };
    const before = new Set(await copiesAtTarget(new Set()));
    let r: CliResult | undefined;
    try {
      r = await c.run(t, n);
      // The fault landed unless ferry simply did its job.
      if (r?.code !== 0) counts.hit++;
      const outcome = await judge(t, c, r, before);
      counts[outcome]++;
      if (outcome !== 'clean' && outcome !== 'in doubt')
        counts.errors.push(
          `trial ${n}: ${outcome}; ${t.notes.join('; ')}; ${r?.stderr.trim().slice(0, 300) ?? ''}`,
        );
    } catch (err) {
      counts.errors.push(`trial ${n}: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      // The fixture is Node's child (Node reaps it); the copies are the target agent's.
      t.d.child.kill('SIGKILL');
      await t.d.exited;
      for (const pid of await copies(r, before)) killAndReap(pid);
    }
  }
  return counts;
}

const wanted = values.classes.split(',').filter((x) => x !== '');
const chosen = wanted.length === 0 ? CLASSES : CLASSES.filter((c) => wanted.includes(c.name));
const trials = Number(values.trials);
const rows: string[][] = [];
const problems: string[] = [];
try {
  agents = [await startAgentOn(lab, source), await startAgentOn(lab, target)];
  // The full-disk target: an agent of its own on a small tmpfs.
  const small = `${lab.work}/small`;
  mkdirSync(small);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'ferry-faults', small]);
  cleanup(() => void execFileSync('umount', [small]));
  agents.push(await startAgentOn(lab, target, small, { port: PORT + 1 }));
  for (const c of chosen) {
    const started = Date.now();
    const counts = await runClass(c, trials);
    const done = trials - counts.errors.filter((e) => !/: (lost|duplicated|corrupt);/.test(e)).length;
    rows.push([
      c.name,
      String(done),
      String(counts.hit),
      String(counts.lost),
      String(counts.duplicated),
      String(counts.corrupt),
      String(counts['in doubt']),
      String(counts.clean),
      ((Date.now() - started) / 1000).toFixed(0),
    ]);
    problems.push(...counts.errors.map((e) => `${c.name} ${e}`));
    process.stderr.write(`done ${c.name}\n`);
  }
} finally {
  setLink(target, true);
  for (const step of steps.reverse()) {
    try {
      await step();
    } catch {
      // the rest still goes
    }
  }
}
process.stdout.write(
  `${renderTable(
    [
      { header: 'CLASS' },
      { header: 'TRIALS', align: 'right' },
      { header: 'FAULT HIT', align: 'right' },
      { header: 'LOST', align: 'right' },
      { header: 'DUPLICATED', align: 'right' },
      { header: 'CORRUPT', align: 'right' },
      { header: 'IN DOUBT', align: 'right' },
      { header: 'CLEAN', align: 'right' },
      { header: 'SECONDS', align: 'right' },
    ],
    rows,
  )}\n\n${chosen.map((c) => `${c.name}: ${c.what}`).join('\n')}\n`,
);
if (problems.length > 0) {
  process.stdout.write(
    `\n${problems.length} trial(s) went wrong or could not run:\n${problems.map((p) => `  ${p}\n`).join('')}`,
  );
  process.exitCode = 1;
}
