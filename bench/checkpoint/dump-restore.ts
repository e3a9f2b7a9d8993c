// bench/checkpoint/dump-restore: dump and restore of workloads of several sizes and kinds of
// memory, with ferry and, when criu >= 4.1 is on PATH, CRIU interleaved, run by run.
//   npm run bench:checkpoint -- [--sizes 64,512,2048] [--kinds random,zero,half] [--runs 5]
//                                [--mode kill|leave-running] [--compress] [--no-criu]
// Reports medians: frozen time (each tool's own figure), dump wall time, image size, restore wall
// time (until the command returns with the process running) and ferry's own restore time; then
// ferry/CRIU ratios. One warm-up round per configuration is not counted: first use of memory is
// much slower in a virtual machine than any later one.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { renderTable } from '../../src/cli/format.js';
import { CLI } from '../../test/helpers/paths.js';
import { becomeSubreaper, killAndReap } from '../../test/helpers/reaper.js';
import { median } from '../stats.js';
import { criuVersion, dirBytes, startWorkload, time } from '../workload.js';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '64,512,2048' },
    kinds: { type: 'string', default: 'random,zero,half' },
    runs: { type: 'string', default: '5' },
    mode: { type: 'string', default: 'kill' },
    compress: { type: 'boolean', default: false },
    'no-criu': { type: 'boolean', default: false },
  },
});

interface Sample {
  frozenMs: number;
  dumpMs: number;
  imageBytes: number;
  restoreMs: number;
  /** The tool's own restore time, where it reports one. */
  restoreInternalMs: number | null;
}

type Tool = 'ferry' | 'criu';

function ferryDump(pid: number, image: string): { frozenMs: number } {
  const args = [CLI, 'dump', String(pid), '-D', image, '--json'];
  if (values.mode === 'leave-running') args.push('--leave-running');
  if (values.compress) args.push('--compress');
  return JSON.parse(execFileSync(process.execPath, args, { encoding: 'utf8' })) as { frozenMs: number };
}

function ferryRestore(image: string): { pid: number; restoreMs: number } {
  const out = execFileSync(process.execPath, [CLI, 'restore', '-D', image, '--json'], { encoding: 'utf8' });
  return JSON.parse(out) as { pid: number; restoreMs: number };
}

function criuDump(pid: number, image: string): { frozenMs: number } {
  const args = ['dump', '-t', String(pid), '-D', image, '-o', 'dump.log', '--display-stats'];
  if (values.mode === 'leave-running') args.push('--leave-running');
  const out = execFileSync('criu', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const us = /Frozen time: (\d+) us/.exec(out);
  if (!us) throw new Error(`criu dump printed no frozen time:\n${out}`);
  return { frozenMs: Number(us[1]) / 1000 };
}

function criuRestore(image: string, pid: number): { pid: number; restoreMs: null } {
  execFileSync('criu', ['restore', '-D', image, '-d', '-o', 'restore.log'], { stdio: 'ignore' });
  return { pid, restoreMs: null };
}

async function sample(tool: Tool, mib: number, kind: string): Promise<Sample> {
  const work = mkdtempSync(join(tmpdir(), `ferry-bench-${tool}-`));
  const image = join(work, 'image');
  mkdirSync(image);
  try {
    const workload = await startWorkload(work, 'memload', [String(mib), kind]);
    const [dumped, dumpMs] = time(() =>
      tool === 'ferry' ? ferryDump(workload.pid, image) : criuDump(workload.pid, image),
    );
    const imageBytes = dirBytes(image);
    if (values.mode === 'leave-running') killAndReap(workload.pid);
    await workload.exited;
    const [restored, restoreMs] = time(() =>
      tool === 'ferry' ? ferryRestore(image) : criuRestore(image, workload.pid),
    );
    if (!existsSync(`/proc/${restored.pid}`)) throw new Error(`${tool} restored no process ${restored.pid}`);
    killAndReap(restored.pid);
    return {
      frozenMs: dumped.frozenMs,
      dumpMs,
      imageBytes,
      restoreMs,
      restoreInternalMs: restored.restoreMs,
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

becomeSubreaper();
const criu = values['no-criu'] ? null : criuVersion();
const tools: Tool[] = criu ? ['ferry', 'criu'] : ['ferry'];
const runs = Number(values.runs);
const rows: string[][] = [];
const ratios: string[][] = [];
const f1 = (n: number | null): string => (n === null ? '-' : n.toFixed(n < 10 ? 1 : 0));
process.stdout.write(
  `dump (${values.mode}${values.compress ? ', ferry --compress' : ''}) and restore; median of ${runs} runs after one warm-up; ` +
    `${criu ? `CRIU ${criu}` : 'no CRIU >= 4.1 on PATH'}\n\n`,
);
for (const mib of values.sizes.split(',').map(Number)) {
  for (const kind of values.kinds.split(',')) {
    const samples = new Map<Tool, Sample[]>(tools.map((t) => [t, []]));
    for (let run = 0; run <= runs; run++) {
      // Interleaved, and alternating which tool goes first.
      const order = run % 2 ? [...tools].reverse() : tools;
      for (const tool of order) {
        const s = await sample(tool, mib, kind);
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
        `${mib} MiB`,
        kind,
        tool,
        f1(med(tool, 'frozenMs')),
        f1(med(tool, 'dumpMs')),
        f1(med(tool, 'imageBytes')! / 2 ** 20),
        f1(med(tool, 'restoreMs')),
        f1(med(tool, 'restoreInternalMs')),
      ]);
    }
    if (criu) {
      const r = (key: keyof Sample): string => (med('ferry', key)! / med('criu', key)!).toFixed(2);
      ratios.push([`${mib} MiB`, kind, r('frozenMs'), r('dumpMs'), r('imageBytes'), r('restoreMs')]);
    }
    process.stderr.write(`done ${mib} MiB ${kind}\n`);
  }
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
        ],
        ratios,
      ) +
      '\n',
  );
}
