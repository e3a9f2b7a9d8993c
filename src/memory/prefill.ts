// Prefill: the target's restore begun while a pre-copy migration's rounds arrive, so that its
// downtime no longer grows with the process's size. A restore stub is started at the first round;
// each round's pages are read (preadv, by the stub itself) into staging memory of the stub, one
// region per anonymous VMA the source had then, at addresses no VMA of the process used. At the
// restore (restore.ts), each VMA whose staging matches it moves into place with mremap, without a
// copy, and only the pages that changed since their round are written, the dropped ones cleared.
import { FerryError } from '../errors.js';
import { resolvePages, type PageLayer } from '../image/page-layers.js';
import type { PageIndex } from '../image/page-index.js';
import type { LayerVma } from '../image/sink.js';
import { readProcText } from '../proc/files.js';
import { parseMaps } from '../proc/maps.js';
import { readPagesInProcess, type LayerRange, type StagedRun } from './pages.js';
import { startRestoreStub, type RestoreStub } from '../stub/restore-stub.js';
import { STUB_SYSCALL_ADDRESS } from '../stub/stub.js';
import { MADV, MAP, MREMAP, PROT } from '../sys/mman.js';
import { NR } from '../sys/nr.js';
import { RemoteSyscalls, type RemoteCall } from '../tracee/remote.js';
import { findGap } from '../vma/gaps.js';
import { overlaySpans, pushSpan, type Span } from '../vma/spans.js';
import type { VmaKind } from '../vma/vma.js';

/** Kinds whose VMAs are staged: private anonymous memory without a name or growth direction. */
const STAGED_KINDS = new Set<VmaKind>(['anon', 'heap', 'bss']);

export function isStageable(v: Pick<LayerVma, 'perms' | 'kind' | 'name'>): boolean {
  return v.perms[3] === 'p' && STAGED_KINDS.has(v.kind) && (v.name === '' || v.name === '[heap]');
}

/** One VMA's staging: [start, end) of the process, held at `at` in the stub. */
export interface Staged extends Span {
  at: bigint;
  /** What its pages hold, in process addresses, sorted; pages not listed were never written. */
  runs: StagedRun[];
}

const SCRATCH = 1 << 20;
const PAGE = 4096n;

/** Page tables move by whole 2 MiB tables when source and destination agree modulo this. */
const PMD = 2n << 20n;

/**
 * A free range for the staging of VMA [start, start + len) that does not even touch `occupied`
 * (staging next to the stub's own anonymous memory would merge with it into one VMA), at the same
 * offset within 2 MiB as the VMA, so that moving it into place moves whole page tables.
 */
function stagingGap(occupied: readonly Span[], start: bigint, len: bigint): bigint | undefined {
  const padded = occupied.map((o) => ({ start: o.start - PAGE, end: o.end + PAGE }));
  const base = findGap(padded, len + PMD);
  return base === undefined ? undefined : base + (start % PMD);
}
const hex = (n: bigint): string => `0x${n.toString(16)}`;

export class Prefill {
  /** Staging by the VMA's start address. */
  readonly staged = new Map<bigint, Staged>();
  private done = false;

  private constructor(readonly stub: RestoreStub) {}

  /**
   * Start a stub for the process that had PID `originalPid` (kept when free here). Like the held
   * process it becomes, it does not outlive the agent: no stub outlives its ferry.
   */
  static start(originalPid: number): Prefill {
    const stub = startRestoreStub(originalPid, 'try');
    return new Prefill(stub);
  }

  /**
   * Read one round's pages (`index` of the layer in image part `part`, now in `file`) into staging
   * for the VMAs in `vmas`.
   */
  addLayer(part: string, file: string, index: PageIndex, vmas: readonly LayerVma[]): void {
    if (this.done) throw new FerryError('FERRY_INTERNAL', 'prefill used after its restore');
    const remote = RemoteSyscalls.open(this.stub.tracee, { insn: STUB_SYSCALL_ADDRESS });
    try {
      remote.installScratch({ size: SCRATCH });
      this.stage(remote, vmas.filter(isStageable));
      const layer: PageLayer = {
        name: file,
        index,
        file,
        part,
        open: () => fail('a prefill reads in place'),
      };
      const reads: LayerRange[] = [];
      const clears: RemoteCall[] = [];
      const written = new Map<Staged, StagedRun[]>();
      const list = [...this.staged.values()].sort((a, b) => (a.start < b.start ? -1 : 1));
      let i = 0;
      for (const src of resolvePages([layer])) {
        for (let a = src.start; a < src.end;) {
          while (i < list.length && list[i]!.end <= a) i++;
          const s = list[i];
          if (!s || s.start >= src.end) break;
          const from = a > s.start ? a : s.start;
          const to = src.end < s.end ? src.end : s.end;
          const at = s.at + (from - s.start);
          const len = Number(to - from);
          if (src.layer === null) {
            clears.push({ name: `madvise(${hex(at)})`, nr: NR.madvise, args: [at, len, MADV.DONTNEED] });
          } else {
            reads.push({ addr: at, len, offset: src.offset + Number(from - src.start) });
          }
          const runs = written.get(s) ?? [];
          runs.push({ start: from, end: to, part: src.layer === null ? null : part });
          written.set(s, runs);
          a = to;
        }
      }
      remote.batch(clears);
      readPagesInProcess(remote, file, reads);
      for (const [s, runs] of written)
        s.runs = overlaySpans(s.runs, runs, (r, start, end) => ({ start, end, part: r.part }));
      remote.removeScratch();
    } finally {
      remote.close();
    }
  }

  /** Make or resize the staging region of every stageable VMA. */
  private stage(remote: RemoteSyscalls, vmas: readonly LayerVma[]): void {
    const occupied = (): Span[] => [
      ...vmas,
      ...parseMaps(readProcText(this.stub.pid, 'maps')),
      ...[...this.staged.values()].map((s) => ({ start: s.at, end: s.at + (s.end - s.start) })),
    ];
    for (const v of vmas) {
      const len = v.end - v.start;
      const s = this.staged.get(v.start);
      if (s && s.end === v.end) continue;
      const at = stagingGap(occupied(), v.start, len);
      if (at === undefined) continue; // left to the restore
      if (s) {
        const old = s.end - s.start;
        remote.check('mremap', NR.mremap, s.at, old, len, MREMAP.MAYMOVE | MREMAP.FIXED, at);
        s.at = at;
        s.end = v.end;
        s.runs = s.runs.filter((r) => r.start < v.end).map((r) => (r.end > v.end ? { ...r, end: v.end } : r));
      } else {
        const flags = MAP.PRIVATE | MAP.ANONYMOUS | MAP.FIXED_NOREPLACE;
        remote.check('mmap(staging)', NR.mmap, at, len, PROT.READ | PROT.WRITE, flags, -1, 0);
        this.staged.set(v.start, { start: v.start, end: v.end, at, runs: [] });
      }
    }
  }

  /** Where the staging regions are in the stub. */
  stagingRanges(): Span[] {
    const out: Span[] = [];
    const sorted = [...this.staged.values()].sort((a, b) => (a.at < b.at ? -1 : 1));
    for (const s of sorted) pushSpan(out, s.at, s.at + (s.end - s.start));
    return out;
  }

  /**
   * At the restore, once the stub's own mappings are gone: move each staging region whose VMA is in
   * the image unchanged (same start and end, still stageable) into place with mremap; unmap the
   * others. Staging in the way of any VMA first moves aside. `reserved` is the restore's own
   * region. Returns what each moved VMA holds.
   */
  moveIntoPlace<V extends LayerVma>(
    remote: RemoteSyscalls,
    vmas: readonly V[],
    reserved: Span,
  ): Map<V, StagedRun[]> {
    const moved = new Map<V, StagedRun[]>();
    const all = [...this.staged.values()];
    const occupied = (): Span[] => [
      ...vmas,
      reserved,
      ...all.map((s) => ({ start: s.at, end: s.at + (s.end - s.start) })),
    ];
    const inTheWay = (s: Staged): boolean => {
      const end = s.at + (s.end - s.start);
      return vmas.some((v) => v.start < end && s.at < v.end) || (reserved.start < end && s.at < reserved.end);
    };
    const calls: RemoteCall[] = [];
    for (const s of all) {
      if (!inTheWay(s)) continue;
      const len = s.end - s.start;
      const at = stagingGap(occupied(), s.start, len);
      if (at === undefined) {
        remote.check('munmap(staging)', NR.munmap, s.at, len);
        this.staged.delete(s.start);
        continue;
      }
      remote.check('mremap(staging)', NR.mremap, s.at, len, len, MREMAP.MAYMOVE | MREMAP.FIXED, at);
      s.at = at;
    }
    for (const v of vmas) {
      const s = this.staged.get(v.start);
      if (!s || s.end !== v.end || !isStageable(v)) continue;
      const len = v.end - v.start;
      calls.push({
        name: `mremap(${hex(s.at)} to ${hex(v.start)})`,
        nr: NR.mremap,
        args: [s.at, len, len, MREMAP.MAYMOVE | MREMAP.FIXED, v.start],
      });
      moved.set(v, s.runs);
      this.staged.delete(v.start);
    }
    for (const s of this.staged.values())
      calls.push({ name: 'munmap(staging)', nr: NR.munmap, args: [s.at, s.end - s.start] });
    this.staged.clear();
    remote.batch(calls);
    return moved;
  }

  /** Hand the stub to the restore: the prefill is over. */
  take(): RestoreStub {
    this.done = true;
    return this.stub;
  }

  /** Give up: the stub goes (unless a restore took it). */
  abort(): void {
    if (!this.done) this.stub.tracee.kill();
    this.done = true;
  }
}

function fail(why: string): never {
  throw new FerryError('FERRY_INTERNAL', why);
}
