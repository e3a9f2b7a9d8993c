// bench/checkpoint/dump-restore: dump and restore of workloads of several sizes and kinds of
// memory, then of real programs (4 threads; redis-server holding 1 GiB), with ferry and, when
// criu >= 4.1 is on PATH, CRIU interleaved, run by run.
//   npm run bench:checkpoint -- [--sizes 64,512,2048] [--kinds random,zero,half] [--runs 5]
//                                [--programs threads,redis] [--redis-mib 1024]
//                                [--mode kill|leave-running] [--compress] [--no-criu]
// (`--sizes ''` or `--programs ''` leaves those out.) A restored program is checked before it is
// counted: every thread there, every redis key read back.
// ferry runs twice: its command line (a Node.js process started for each command) and a ferry
// agent already running on this host (its HTTP API, as a platform embeds ferry), from the request to
// the answer. Reports medians: frozen time (each tool's own figure), dump wall time, image size,
// restore wall time (until the command or request returns with the process running) and ferry's
// own restore time; then ferry/CRIU ratios. One warm-up round per configuration is not counted:
// first use of memory is much slower in a virtual machine than any later one.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { renderTable } from '../../src/cli/format.js';
import { becomeSubreaper, killAndReap } from '../../test/helpers/reaper.js';
import { benchArgs, refuse, median } from '../stats.js';
import { redisProgram, threadsProgram, type Program, type Running } from './programs.js';
import {
  agentDump,
  agentRestore,
  criuDump,
  criuRestore,
  criuVersion,
  dirBytes,
  ferryDump,
  ferryRestore,
  startBenchAgent,
  startWorkload,
  time,
  timeAsync,
  type BenchAgent,
} from '../workload.js';

const { values } = benchArgs({
  sizes: { type: 'string', default: '64,512,2048' },
  kinds: { type: 'string', default: 'random,zero,half' },
  runs: { type: 'string', default: '5' },
  mode: { type: 'string', default: 'kill' },
  programs: { type: 'string', default: 'threads,redis' },
  'redis-mib': { type: 'string', default: '1024' },
  compress: { type: 'boolean', default: false },
  'no-criu': { type: 'boolean', default: false },
});

interface Sample {
  frozenMs: number;
  dumpMs: number;
  imageBytes: number;
  restoreMs: number;
  /** The tool's own restore time, where it reports one. */
  restoreInternalMs: number | null;
}

type Tool = 'ferry' | 'agent' | 'criu';

/** A synthetic workload: `mib` MiB of memory of one kind (the memload fixture). */
function memload(mib: number, kind: string): Program {
  return {
    size: `${mib} MiB`,
    kind,
    async start(work) {
      const w = await startWorkload(work, 'memload', [String(mib), kind]);
      return { pid: w.pid, exited: w.exited, check: () => {} };
    },
  };
}

/** The agent's images are in its data directory, by name. */
let imageCount = 0;

async function sample(tool: Tool, program: Program, agent: BenchAgent): Promise<Sample> {
  const work = mkdtempSync(join(tmpdir(), `ferry-bench-${tool}-`));
  const name = `bench-${imageCount++}`;
  const image = tool === 'agent' ? join(agent.dataDir, 'images', name) : join(work, 'image');
  if (tool !== 'agent') mkdirSync(image);
  let started: Running | undefined;
  try {
    const running = await program.start(work);
    started = running;
    const flags = { leaveRunning: values.mode === 'leave-running', compress: values.compress };
    const [dumped, dumpMs] =
      tool === 'agent'
        ? await timeAsync(() => agentDump(agent, running.pid, name, flags))
        : time(() =>
            tool === 'ferry' ? ferryDump(running.pid, image, flags) : criuDump(running.pid, image, flags),
          );
    const imageBytes = dirBytes(image);
    if (values.mode === 'leave-running') killAndReap(running.pid);
    await running.exited;
    const [restored, restoreMs] =
      tool === 'agent'
        ? await timeAsync(() => agentRestore(agent, name))
        : time(() => {
            if (tool === 'ferry') return ferryRestore(image);
            criuRestore(image);
            return { pid: running.pid, restoreMs: null };
          });
    try {
      if (!existsSync(`/proc/${restored.pid}`))
        throw new Error(`${tool} restored no process ${restored.pid}`);
      running.check(restored.pid);
    } finally {
      killAndReap(restored.pid);
    }
    return {
      frozenMs: dumped.frozenMs,
      dumpMs,
      imageBytes,
      restoreMs,
      restoreInternalMs: restored.restoreMs,
    };
  } finally {
    // Whatever failed, nothing the sample started runs on (a redis-server, say).
    if (started) killAndReap(started.pid);
    rmSync(work, { recursive: true, force: true });
    if (tool === 'agent') rmSync(image, { recursive: true, force: true });
  }
}

const list = (spec: string): string[] => spec.split(',').filter((x) => x !== '');
const programs: Record<string, Program> = {
  threads: threadsProgram,
  redis: redisProgram(Number(values['redis-mib'])),
};
const cases = [
  ...list(values.sizes).flatMap((mib) => list(values.kinds).map((kind) => memload(Number(mib), kind))),
  ...list(values.programs).map((name) => {
    const program = programs[name];
    if (!program) refuse(`no program ${name} (there are ${Object.keys(programs).join(', ')})`);
    return program;
  }),
];

becomeSubreaper();
const criu = values['no-criu'] ? null : criuVersion();
const tools: Tool[] = criu ? ['ferry', 'agent', 'criu'] : ['ferry', 'agent'];
const agent = await startBenchAgent();
const runs = Number(values.runs);
const rows: string[][] = [];
const ratios: string[][] = [];
const f1 = (n: number | null): string => (n === null ? '-' : n.toFixed(n < 10 ? 1 : 0));
process.stdout.write(
  `dump (${values.mode}${values.compress ? ', ferry --compress' : ''}) and restore; median of ${runs} runs after one warm-up; ` +
    `${criu ? `CRIU ${criu}` : 'no CRIU >= 4.1 on PATH'}\n\n`,
);
const failures: string[] = [];
try {
  for (const c of cases) {
    // One case failing costs that case, not what the others measured.
    try {
      await measure(c);
    } catch (err) {
      failures.push(`${c.size} ${c.kind}: ${err instanceof Error ? err.message : String(err)}`);
      process.stderr.write(`FAILED ${c.size} ${c.kind}\n`);
    }
  }
} finally {
  await agent.stop();
}

async function measure(c: Program): Promise<void> {
  const samples = new Map<Tool, Sample[]>(tools.map((t) => [t, []]));
  for (let run = 0; run <= runs; run++) {
    // Interleaved, and alternating which tool goes first.
    const order = run % 2 ? [...tools].reverse() : tools;
    for (const tool of order) {
      const s = await sample(tool, c, agent);
      if (run > 0) samples.get(tool)!.push(s);
    }
  }
  const med = (tool: Tool, key: keyof Sample): number | null => {
    const xs = samples
      .get(tool)!
      .map((s) => s[key])
      .filter((x): x is number => x !== null);
    return xs.length ? median(xs) : null;
  };
  for (const tool of tools) {
    rows.push([
      c.size,
      c.kind,
      tool === 'agent' ? 'ferry agent' : tool,
      f1(med(tool, 'frozenMs')),
      f1(med(tool, 'dumpMs')),
      f1(med(tool, 'imageBytes')! / 2 ** 20),
      f1(med(tool, 'restoreMs')),
      f1(med(tool, 'restoreInternalMs')),
    ]);
  }
  if (criu) {
    const r = (key: keyof Sample): string => (med('ferry', key)! / med('criu', key)!).toFixed(2);
    const agentRestoreRatio = (med('agent', 'restoreMs')! / med('criu', 'restoreMs')!).toFixed(2);
    ratios.push([
      c.size,
      c.kind,
      r('frozenMs'),
      r('dumpMs'),
      r('imageBytes'),
      r('restoreMs'),
      agentRestoreRatio,
    ]);
  }
  process.stderr.write(`done ${c.size} ${c.kind}\n`);
}
process.stdout.write(
  renderTable(
    [
      { header: 'SIZE' },
      { header: 'KIND' },
      { header: 'TOOL' },
      { header: 'FROZEN MS', align: 'right' },
      { header: 'DUMP MS', align: 'right' },
      { header: 'IMAGE MIB', align: 'right' },
      { header: 'RESTORE MS', align: 'right' },
      { header: 'OWN RESTORE MS', align: 'right' },
    ],
    rows,
  ) + '\n',
);
if (criu) {
  process.stdout.write(
    '\nferry / CRIU (below 1.0: ferry is faster or smaller)\n' +
      renderTable(
        [
          { header: 'SIZE' },
          { header: 'KIND' },
          { header: 'FROZEN', align: 'right' },
          { header: 'DUMP', align: 'right' },
          { header: 'IMAGE', align: 'right' },
          { header: 'RESTORE', align: 'right' },
          { header: 'AGENT RESTORE', align: 'right' },
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
