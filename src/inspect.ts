// `inspect`: a running process's address space, VMA by VMA: kinds, page counts, and what a
// checkpoint would store. Reads /proc only; the process is never stopped or traced.
import { FerryError, isFerryError } from './errors.js';
import { listThreads, readProcLink, readProcText } from './proc/files.js';
import { PAGE_SIZE } from './proc/pagemap.js';
import { parseSmaps, type SmapsEntry } from './proc/smaps.js';
import { userProcessStat } from './proc/process.js';
import type { ProcStat } from './proc/stat.js';
import { parseTaskSyscall } from './proc/task-syscall.js';
import { classifyVmas } from './vma/classify.js';
import { openPageScanner, type ScanMethod } from './vma/pages.js';
import { isErrno } from './sys/errno.js';
import { parseVmaSelection } from './vma/select.js';
import { countPages, emptyCounts, type PageCounts } from './vma/usage.js';
import type { Vma } from './vma/vma.js';

export interface InspectOptions {
  /** A VMA selection (docs/VMA-SELECTION.md); every VMA when omitted. */
  vmas?: string;
  /** How to find pages: PAGEMAP_SCAN, pagemap reads, or the best available ('auto'). */
  scanMethod?: ScanMethod | 'auto';
  /** Hears progress through the address space, in bytes. */
  onProgress?: (progress: { doneBytes: number; totalBytes: number }) => void;
}

export interface VmaReport extends Vma {
  pages: PageCounts;
}

export interface InspectResult {
  pid: number;
  /** The command name (comm). */
  command: string;
  /** /proc/PID/exe, or '' when it cannot be read. */
  exe: string;
  threads: number;
  scanMethod: ScanMethod;
  /** The selection spec used, or undefined for all VMAs. */
  selection: string | undefined;
  /** The selected VMAs, by address. */
  vmas: VmaReport[];
  totals: { vmas: number; sizeBytes: number; pages: PageCounts };
  /** Bytes of page data a checkpoint of the selected VMAs would store. */
  checkpointBytes: number;
}

const STACK_SEARCH_LIMIT = 4096;

function processGone(pid: number): FerryError {
  return new FerryError('FERRY_PROCESS_EXITED', `process ${pid} exited while it was being inspected`);
}

/** Stack pointers of threads blocked in the kernel or stopped: their stacks are 'stack' VMAs. */
function threadStackPointers(pid: number): bigint[] {
  const sps: bigint[] = [];
  for (const tid of listThreads(pid).slice(0, STACK_SEARCH_LIMIT)) {
    try {
      const state = parseTaskSyscall(readProcText(pid, `task/${tid}/syscall`));
      if (state.state !== 'running') sps.push(state.sp);
    } catch {
      // The thread exited, or is running: its stack stays unnamed.
    }
  }
  return sps;
}

function hugeBytes(entry: SmapsEntry | undefined): number {
  const f = entry?.fields ?? {};
  return (
    (f.AnonHugePages ?? 0) +
    (f.ShmemPmdMapped ?? 0) +
    (f.FilePmdMapped ?? 0) +
    (f.Private_Hugetlb ?? 0) +
    (f.Shared_Hugetlb ?? 0)
  );
}

function readLayout(pid: number, stat: ProcStat): { smaps: SmapsEntry[]; vmas: Vma[] } {
  const smaps = parseSmaps(readProcText(pid, 'smaps'), `/proc/${pid}/smaps`);
  if (smaps.length === 0) {
    userProcessStat(pid);
    throw processGone(pid);
  }
  return { smaps, vmas: classifyVmas(smaps, stat, threadStackPointers(pid)) };
}

/** Inspect the address space of process `pid`. */
export function inspect(pid: number, options: InspectOptions = {}): InspectResult {
  const selection = options.vmas === undefined ? undefined : parseVmaSelection(options.vmas);
  const stat = userProcessStat(pid);
  try {
    const { smaps, vmas: all } = readLayout(pid, stat);
    const bySmaps = new Map(smaps.map((e) => [e.start, e]));
    const vmas = selection ? all.filter((v) => selection.matches(v)) : all;
    const scannable = vmas.filter((v) => v.kind !== 'vsyscall');
    const totalBytes = scannable.reduce((n, v) => n + Number(v.end - v.start), 0);
    const scanner = openPageScanner(pid, options.scanMethod ?? 'auto');
    let counts: PageCounts[];
    try {
      counts = countPages(
        scannable,
        scanner,
        (v) => hugeBytes(bySmaps.get(v.start)),
        (doneBytes) => options.onProgress?.({ doneBytes, totalBytes }),
      );
    } finally {
      scanner.close();
    }
    // A process that died mid-scan leaves an empty pagemap behind: make sure the counts are real.
    userProcessStat(pid);
    const countsByStart = new Map(scannable.map((v, i) => [v.start, counts[i]!]));
    const reports = vmas.map((v) => ({ ...v, pages: countsByStart.get(v.start) ?? emptyCounts() }));
    const totals = sumCounts(reports.map((r) => r.pages));
    return {
      pid,
      command: stat.comm,
      exe: readExe(pid),
      threads: stat.numThreads,
      scanMethod: scanner.method,
      selection: options.vmas,
      vmas: reports,
      totals: {
        vmas: reports.length,
        sizeBytes: reports.reduce((n, r) => n + Number(r.end - r.start), 0),
        pages: totals,
      },
      checkpointBytes: totals.dump * PAGE_SIZE,
    };
  } catch (err) {
    // A scan of a process whose memory is gone fails with ESRCH (PAGEMAP_SCAN on a dead mm).
    if (isFerryError(err, 'FERRY_NO_SUCH_PROCESS', 'FERRY_ZOMBIE') || isErrno(err, 'ESRCH'))
      throw processGone(pid);
    throw err;
  }
}

function readExe(pid: number): string {
  try {
    return readProcLink(pid, 'exe');
  } catch {
    return '';
  }
}

export function sumCounts(all: readonly PageCounts[]): PageCounts {
  const total = emptyCounts();
  for (const c of all) for (const key of Object.keys(total) as (keyof PageCounts)[]) total[key] += c[key];
  return total;
}

/** Hex form of an address in JSON output: `0x7f3a00000000`. */
export const hex = (n: bigint): string => `0x${n.toString(16)}`;

/** The `--json` form of an inspect result (docs/inspect.schema.json). */
export function inspectResultToJson(r: InspectResult): object {
  return {
    version: 1,
    pid: r.pid,
    command: r.command,
    exe: r.exe,
    threads: r.threads,
    pageSize: PAGE_SIZE,
    scanMethod: r.scanMethod,
    selection: r.selection ?? null,
    vmas: r.vmas.map((v) => ({
      start: hex(v.start),
      end: hex(v.end),
      size: Number(v.end - v.start),
      perms: v.perms,
      offset: hex(v.offset),
      dev: v.dev,
      inode: v.inode.toString(),
      kind: v.kind,
      name: v.name,
      deleted: v.deleted,
      vmFlags: v.vmFlags,
      pages: v.pages,
    })),
    totals: { vmas: r.totals.vmas, size: r.totals.sizeBytes, pages: r.totals.pages },
    checkpointBytes: r.checkpointBytes,
  };
}
