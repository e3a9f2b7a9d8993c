// ferry inspect <pid> [--json] [--vmas <spec>] [--scan auto|pagemap-scan|pagemap]
import { FerryError } from '../errors.js';
import { inspect, inspectResultToJson, type InspectResult } from '../inspect.js';
import { PAGE_SIZE } from '../proc/pagemap.js';
import { parsePid, printJson, type Command } from './command.js';
import { formatBytes, renderTable, type Column } from './format.js';
import { progressBar } from './progress.js';

const SCAN_METHODS = ['auto', 'pagemap-scan', 'pagemap'] as const;

const COLUMNS: Column[] = [
  { header: 'START' },
  { header: 'END' },
  { header: 'SIZE', align: 'right' },
  { header: 'PERM' },
  { header: 'OFFSET', align: 'right' },
  { header: 'KIND' },
  { header: 'RSS', align: 'right' },
  { header: 'SWAP', align: 'right' },
  { header: 'ANON', align: 'right' },
  { header: 'FILE', align: 'right' },
  { header: 'HUGE', align: 'right' },
  { header: 'DUMP', align: 'right' },
  { header: 'NAME' },
];

function renderInspect(r: InspectResult): string {
  const rows = r.vmas.map((v) => [
    v.start.toString(16).padStart(12, '0'),
    v.end.toString(16).padStart(12, '0'),
    formatBytes(Number(v.end - v.start)),
    v.perms,
    v.offset.toString(16),
    v.kind,
    String(v.pages.resident),
    String(v.pages.swapped),
    String(v.pages.anon),
    String(v.pages.file),
    String(v.pages.huge),
    String(v.pages.dump),
    v.name + (v.deleted ? ' (deleted)' : ''),
  ]);
  const t = r.totals.pages;
  const pages = (n: number): string => `${n} pages (${formatBytes(n * PAGE_SIZE)})`;
  return [
    `process ${r.pid} (${r.command}) ${r.exe}, ${r.threads} thread(s)` +
      (r.selection ? `, VMAs matching "${r.selection}"` : ''),
    '',
    renderTable(COLUMNS, rows),
    '',
    `${r.totals.vmas} VMAs, ${formatBytes(r.totals.sizeBytes)} mapped; page counts are in ${PAGE_SIZE}-byte pages (${r.scanMethod})`,
    `resident ${pages(t.resident)}, swapped ${pages(t.swapped)}, anonymous ${pages(t.anon)}, file ${pages(t.file)}, huge ${pages(t.huge)}`,
    `a checkpoint would write ${pages(t.dump)} of page data`,
  ].join('\n');
}

export const inspectCommand: Command = {
  name: 'inspect',
  summary: "show a running process's address space, VMA by VMA, with page counts",
  usage: 'ferry inspect <pid> [--json] [--vmas <spec>] [--scan auto|pagemap-scan|pagemap]',
  options: { vmas: { type: 'string' }, scan: { type: 'string' } },
  positionals: { min: 1, max: 1 },
  run({ values, positionals }) {
    const pid = parsePid(positionals[0]);
    const scan = (values.scan as string | undefined) ?? 'auto';
    if (!(SCAN_METHODS as readonly string[]).includes(scan)) {
      throw new FerryError('FERRY_USAGE', `--scan must be one of ${SCAN_METHODS.join(', ')}`);
    }
    const bar = progressBar(`inspecting ${pid}`, formatBytes);
    let result: InspectResult;
    try {
      result = inspect(pid, {
        vmas: values.vmas as string | undefined,
        scanMethod: scan as (typeof SCAN_METHODS)[number],
        onProgress: (p) => bar.update(p.doneBytes, p.totalBytes),
      });
    } finally {
      bar.done();
    }
    if (values.json) printJson(inspectResultToJson(result));
    else process.stdout.write(`${renderInspect(result)}\n`);
    return 0;
  },
};
