// bench/inspect/sparse: inspect a process with one 16 GiB sparse anonymous mapping, one page in
// 1000 written, with each page-scanning method side by side. Reports the median wall time and the
// pages of address space covered per second.
//   npm run bench:inspect [-- <GiB> <stride> <runs>]
import { inspect } from '../../src/inspect.js';
import { renderTable } from '../../src/cli/format.js';
import type { ScanMethod } from '../../src/vma/pages.js';
import { fixture } from '../../test/helpers/fixtures.js';
import { startProcess } from '../../test/helpers/processes.js';
import { median, timeRuns } from '../stats.js';

const [gib = '16', stride = '1000', runs = '7'] = process.argv.slice(2);
const target = await startProcess(fixture('sparse'), [gib, stride]);
try {
  const [, address, touched] = target.readyLine.split(' ');
  const start = BigInt(address!);
  const spec = `0x${start.toString(16)}`;
  const pages = (Number(gib) * 2 ** 30) / 4096;
  const rows: string[][] = [];
  for (const method of ['pagemap-scan', 'pagemap'] as ScanMethod[]) {
    let found = 0;
    const times = timeRuns(Number(runs), () => {
      found = inspect(target.pid, { vmas: spec, scanMethod: method }).totals.pages.resident;
    });
    const ms = median(times);
    rows.push([method, ms.toFixed(1), (pages / (ms / 1000) / 1e6).toFixed(1), String(found), touched!]);
  }
  const whole = median(timeRuns(Number(runs), () => inspect(target.pid)));
  process.stdout.write(
    `inspect of a ${gib} GiB mapping, one page in ${stride} written (${pages} pages), median of ${runs} runs\n\n` +
      renderTable(
        [
          { header: 'METHOD' },
          { header: 'MS', align: 'right' },
          { header: 'MPAGES/S', align: 'right' },
          { header: 'RESIDENT', align: 'right' },
          { header: 'TOUCHED' },
        ],
        rows,
      ) +
      `\n\nwhole process (every VMA, smaps included, auto method): ${whole.toFixed(1)} ms\n`,
  );
} finally {
  await target.stop();
}
