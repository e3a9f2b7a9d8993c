// bench/migrate/downtime: live migration of a process that rewrites its memory at a given rate,
// stop-copy, pre-copy and post-copy, to an agent on this host (loopback), and, when criu >= 4.1 is
// on PATH, CRIU's dump + restore of the same workload side by side (CRIU has no migration of its own).
//   npm run bench:migrate -- [--sizes 64,1024] [--rates 0,10,100] [--runs 3] [--max-downtime 300]
//                            [--pattern sequential|random] [--threads 1] [--modes stop-copy,pre-copy,post-copy,hybrid]
//                            [--no-criu]
// --pattern random: each write goes to a page drawn at random (scattered dirty pages, as heaps and
// databases make), not round-robin; --threads <n> (random only): n threads share the writing, as a
// JVM's or a server's do (every thread of the process is frozen, read and restored).
// Reports medians: downtime (frozen time, until the process runs at the target; post-copy's pages
// come after), total time (post-copy: until the target has every page), bytes sent, rounds; every
// migrated process must pass its own check of every page ("CHECK ok").
// Ratios: each mode's total time over CRIU's dump + restore.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { renderTable } from '../../src/cli/format.js';
import { MIGRATE_MODES, type MigrateMode } from '../../src/migrate/migrate.js';
import { CLI } from '../../test/helpers/paths.js';
import { becomeSubreaper, killAndReap } from '../../test/helpers/reaper.js';
import { waitForLines } from '../../test/helpers/report.js';
import { benchArgs, median, refuse } from '../stats.js';
import {
  criuVersion,
  startBenchAgent,
  startWorkload,
  time,
  type BenchAgent,
  type Workload,
} from '../workload.js';

const { values } = benchArgs({
  sizes: { type: 'string', default: '64,1024' },
  rates: { type: 'string', default: '0,10,100' },
  runs: { type: 'string', default: '3' },
  'max-downtime': { type: 'string', default: '300' },
  'no-criu': { type: 'boolean', default: false },
  pattern: { type: 'string', default: 'sequential' },
  threads: { type: 'string', default: '1' },
  modes: { type: 'string', default: MIGRATE_MODES.join(',') },
});

type Tool = MigrateMode | 'criu';

interface Sample {
  downtimeMs: number;
  totalMs: number;
  sentMiB: number;
  rounds: number;
}

/** Send SIGUSR1 and read the fixture's verdict on its own memory. */
async function check(out: string, pid: number): Promise<void> {
  const before = readFileSync(out, 'utf8').split('\n').filter(Boolean).length;
  process.kill(pid, 'SIGUSR1');
  const line = (await waitForLines(out, before + 1)).at(-1)!;
  if (!line.startsWith('CHECK ok')) throw new Error(`the migrated process failed its check: ${line}`);
}

function ferryMigrate(pid: number, mode: Tool, agent: BenchAgent): Sample & { targetPid: number } {
  const to = `127.0.0.1:${agent.endpoint.port}`;
  const args = ['migrate', String(pid), '--to', to, '--token-file', agent.tokenFile];
  args.push('--json', '--mode', mode);
  if (mode === 'pre-copy') args.push('--max-downtime', values['max-downtime']);
  const r = JSON.parse(execFileSync(CLI, args, { encoding: 'utf8' })) as {
    targetPid: number;
    downtimeMs: number;
    totalMs: number;
    bytesSent: number;
    rounds: number;
  };
  return { ...r, sentMiB: r.bytesSent / 2 ** 20 };
}

/**
 * CRIU's dump (which kills the process) then, once it is reaped, restore: the process is down for
 * both, which is also the total.
 */
async function criuDumpRestore(workload: Workload, image: string): Promise<Sample & { targetPid: number }> {
  mkdirSync(image);
  const criu = (args: string[]): number =>
    time(() => execFileSync('criu', [...args, '-D', image], { stdio: 'ignore' }))[1];
  const dumpMs = criu(['dump', '-t', String(workload.pid), '-o', 'dump.log']);
  await workload.exited; // CRIU restores under the same PID
  const ms = dumpMs + criu(['restore', '-d', '-o', 'restore.log']);
  return { targetPid: workload.pid, downtimeMs: ms, totalMs: ms, sentMiB: 0, rounds: 1 };
}

async function sample(tool: Tool, mib: number, rate: number, agent: BenchAgent): Promise<Sample> {
  const work = mkdtempSync(join(tmpdir(), `ferry-bench-mig-`));
  let workload: Workload | undefined;
  let target: number | undefined;
  try {
    workload = await startWorkload(work, 'dirty', [
      String(mib),
      String(rate),
      ...(values.pattern === 'random' ? ['random', String(threads)] : []),
    ]);
    await new Promise((r) => setTimeout(r, 1000)); // writing at its rate
    const s =
      tool === 'criu'
        ? await criuDumpRestore(workload, join(work, 'image'))
        : ferryMigrate(workload.pid, tool, agent);
    target = s.targetPid;
    await workload.exited;
    await check(workload.out, s.targetPid);
    return s;
  } finally {
    // Whatever failed, nothing the sample started runs on.
    if (target !== undefined) killAndReap(target);
    if (workload) killAndReap(workload.pid);
    rmSync(work, { recursive: true, force: true });
  }
}

if (values.pattern !== 'sequential' && values.pattern !== 'random')
  refuse('--pattern is sequential or random');
const threads = Number(values.threads);
if (!Number.isInteger(threads) || threads < 1 || threads > 256) refuse('--threads is a number from 1 to 256');
if (threads > 1 && values.pattern !== 'random') refuse('--threads goes with --pattern random');
const modes = values.modes.split(',') as MigrateMode[];
if (!modes.every((m) => MIGRATE_MODES.includes(m))) refuse(`--modes are of ${MIGRATE_MODES.join(', ')}`);
becomeSubreaper();
const criu = values['no-criu'] ? null : criuVersion();
const tools: Tool[] = criu ? [...modes, 'criu'] : modes;
const runs = Number(values.runs);
const agent = await startBenchAgent();
const rows: string[][] = [];
const ratios: string[][] = [];
const f1 = (n: number): string => n.toFixed(n < 10 ? 1 : 0);
process.stdout.write(
  `migration on loopback, ${values.pattern} writes${threads > 1 ? ` by ${threads} threads` : ''}, pre-copy --max-downtime ${values['max-downtime']} ms; median of ${runs} runs after one ` +
    `warm-up; ${criu ? `CRIU ${criu} dump + restore` : 'no CRIU >= 4.1 on PATH'}\n\n`,
);
const failures: string[] = [];
try {
  for (const mib of values.sizes.split(',').map(Number)) {
    for (const rate of values.rates.split(',').map(Number)) {
      const samples = new Map<Tool, Sample[]>(tools.map((t) => [t, []]));
      try {
        for (let run = 0; run <= runs; run++) {
          for (const tool of run % 2 ? [...tools].reverse() : tools) {
            const s = await sample(tool, mib, rate, agent).catch((err: unknown) => {
              throw new Error(`${tool}: ${err instanceof Error ? err.message : String(err)}`);
            });
            if (run > 0) samples.get(tool)!.push(s);
          }
        }
      } catch (err) {
        // One case failing costs that case, not what the others measured.
        failures.push(`${mib} MiB at ${rate} MB/s: ${err instanceof Error ? err.message : String(err)}`);
        process.stderr.write(`FAILED ${mib} MiB at ${rate} MB/s\n`);
        continue;
      }
      const med = (tool: Tool, key: keyof Sample): number => median(samples.get(tool)!.map((s) => s[key]));
      for (const tool of tools) {
        rows.push([
          `${mib} MiB`,
          `${rate} MB/s`,
          tool === 'criu' ? 'criu dump+restore' : `ferry ${tool}`,
          f1(med(tool, 'downtimeMs')),
          f1(med(tool, 'totalMs')),
          tool === 'criu' ? '-' : f1(med(tool, 'sentMiB')),
          tool === 'criu' ? '-' : String(med(tool, 'rounds')),
        ]);
      }
      if (criu) {
        const r = (tool: Tool): string => (med(tool, 'totalMs') / med('criu', 'totalMs')).toFixed(2);
        ratios.push([`${mib} MiB`, `${rate} MB/s`, ...modes.map(r)]);
      }
      process.stderr.write(`done ${mib} MiB at ${rate} MB/s\n`);
    }
  }
} finally {
  await agent.stop();
}
process.stdout.write(
  renderTable(
    [
      { header: 'SIZE' },
      { header: 'DIRTY RATE' },
      { header: 'HOW' },
      { header: 'DOWNTIME MS', align: 'right' },
      { header: 'TOTAL MS', align: 'right' },
      { header: 'SENT MIB', align: 'right' },
      { header: 'ROUNDS', align: 'right' },
    ],
    rows,
  ) + '\n',
);
if (criu) {
  process.stdout.write(
    "\nferry's total time / CRIU's dump + restore (target: stop-copy at most 1.2)\n" +
      renderTable(
        [
          { header: 'SIZE' },
          { header: 'DIRTY RATE' },
          ...modes.map((m) => ({ header: m.toUpperCase(), align: 'right' as const })),
        ],
        ratios,
      ) +
      '\n',
  );
}
if (failures.length > 0) {
  process.stdout.write(
    `\n${failures.length} case(s) failed, left out above:\n${failures.map((f) => `  ${f}\n`).join('')}`,
  );
  process.exitCode = 1;
}
