// Prefill: the target's restore begun while a pre-copy migration's rounds arrive, so that its
// downtime no longer grows with the process's size. A restore stub holds staging memory, one
// region per anonymous VMA the source had as each round began, at addresses no VMA of the process
// used. The round's pages go into the staging as they arrive (the source says where: PLACE), never
// to disk; what is not placed is read from the received part (preadv, by the stub) when the round
// ends. At the restore (restore.ts), each VMA whose staging matches it moves into place with
// mremap, without a copy, and only the pages that changed since their round are written, the
// dropped ones cleared; staging that cannot move first gives its bytes back to the parts' holes.
import { closeSync, openSync, writeSync } from 'node:fs';
import { FerryError } from '../errors.js';
import { resolvePages, type PageLayer } from '../image/page-layers.js';
import type { PageIndex } from '../image/page-index.js';
import type { FilePartWriter, LayerVma, PartSummary, PartWriter, Placement } from '../image/sink.js';
import { readProcText } from '../proc/files.js';
import { parseMaps } from '../proc/maps.js';
import { readPagesInProcess, type StagedRun } from './pages.js';
import { IOV_MAX, processVmReadv, processVmWriteBuffersAsync } from '../sys/process-vm.js';
import { startRestoreStub, type RestoreStub } from '../stub/restore-stub.js';
import { STUB_SYSCALL_ADDRESS } from '../stub/stub.js';
import { MADV, MAP, MREMAP, PROT } from '../sys/mman.js';
import { faultPoint } from '../sys/fault.js';
import { NR } from '../sys/nr.js';
import { RemoteSyscalls, type RemoteCall } from '../tracee/remote.js';
import { findGap } from '../vma/gaps.js';
import { cutSpans, overlaySpans, pushSpan, spanAt, subtractSpans, type Span } from '../vma/spans.js';
import type { VmaKind } from '../vma/vma.js';

/**
 * Kinds whose VMAs are staged: private anonymous memory without a name or growth direction. A
 * thread's stack is anonymous memory too ('stack' once a frozen thread's stack pointer is seen in
 * it, 'anon' while the process runs), and so may be the VMA it merged with.
 */
const STAGED_KINDS = new Set<VmaKind>(['anon', 'heap', 'bss', 'stack']);
/** VmFlags that only mmap() gives (grows down, MAP_NORESERVE, MAP_DROPPABLE): staging has none. */
const MMAP_FLAGS = ['gd', 'nr', 'dp'];

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

/**
 * Bytes of a round's pages part that went straight into staging (placed) instead of into the
 * part's file, which has a hole there: `len` bytes for process address `addr`, at `offset` of `file`.
 */
interface Hole {
  file: string;
  addr: bigint;
  len: number;
  offset: number;
}

export class Prefill {
  /** Staging by the VMA's start address. */
  readonly staged = new Map<bigint, Staged>();
  /** The layers added so far, oldest first. */
  private readonly layers: PageLayer[] = [];
  /** Per round's pages part, the process addresses placed in staging as they came (sorted). */
  private readonly placed = new Map<string, Span[]>();
  /**
   * What only staging holds. Staging that does not move into place gives its bytes back to the
   * files first; should the prefill fail, the restore cannot do without it.
   */
  private readonly holes: Hole[] = [];
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

  /** Whether pages of the image are held here alone: the restore cannot do without this prefill. */
  get holds(): boolean {
    return this.holes.length > 0;
  }

  /** A round begins: make (or resize) the staging of the VMAs in `vmas`, for its pages to come. */
  beginRound(vmas: readonly LayerVma[]): void {
    this.checkOpen();
    this.withRemote((remote) => this.stage(remote, vmas.filter(isStageable)));
  }

  /**
   * The round's pages part `part`, written to `file` but for the bytes the source placed (place())
   * in staging: those go straight in there as they come, on libuv's threads.
   */
  placePart(part: string, file: FilePartWriter): PartWriter {
    const placed = this.placed.get(part) ?? [];
    this.placed.set(part, placed);
    return new PlacedPart(this.stub.pid, part, file, this.byStart(), placed, this.holes);
  }

  /**
   * Read one round's pages (`index` of the layer in image part `part`, now in `file`) into staging
   * for the VMAs in `vmas`, but those placed there as they came.
   */
  addLayer(part: string, file: string, index: PageIndex, vmas: readonly LayerVma[]): void {
    this.checkOpen();
    this.withRemote((remote) => {
      remote.installScratch({ size: SCRATCH });
      this.stage(remote, vmas.filter(isStageable));
      this.layers.push({ name: file, index, file, part, open: () => fail('a prefill reads in place') });
      const own = this.layers.length - 1;
      /** Data for staging, by process address: what was not placed is read from the file. */
      const wanted: (Span & { at: bigint; offset: number })[] = [];
      const clears: RemoteCall[] = [];
      const written = new Map<Staged, StagedRun[]>();
      const list = this.byStart();
      let i = 0;
      for (const src of resolvePages(this.layers)) {
        // Pages unchanged since an earlier round (the frozen copy's) are staged already.
        if (src.layer !== null && src.layer !== own) continue;
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
            wanted.push({ start: from, end: to, at, offset: src.offset + Number(from - src.start) });
          }
          const runs = written.get(s) ?? [];
          runs.push({ start: from, end: to, part: src.layer === null ? null : part });
          written.set(s, runs);
          a = to;
        }
      }
      const placed = this.placed.get(part) ?? [];
      if (subtractSpans(placed, wanted).length > 0)
        throw new FerryError('FERRY_IMAGE_CORRUPT', `${part}: pages placed where its index has none`);
      const reads = cutSpans(wanted, placed, (w, start, end) => ({
        start,
        end,
        at: w.at + (start - w.start),
        offset: w.offset + Number(start - w.start),
      })).map((w) => ({ addr: w.at, len: Number(w.end - w.start), offset: w.offset }));
      remote.batch(clears);
      readPagesInProcess(remote, file, reads);
      for (const [s, runs] of written)
        s.runs = overlaySpans(s.runs, runs, (r, start, end) => ({ start, end, part: r.part }));
      remote.removeScratch();
    });
  }

  /** The staging regions, in the order of the VMAs they stage. */
  private byStart(): Staged[] {
    return [...this.staged.values()].sort((a, b) => (a.start < b.start ? -1 : 1));
  }

  private checkOpen(): void {
    if (this.done) throw new FerryError('FERRY_INTERNAL', 'prefill used after its restore');
  }

  private withRemote(work: (remote: RemoteSyscalls) => void): void {
    const remote = RemoteSyscalls.open(this.stub.tracee, { insn: STUB_SYSCALL_ADDRESS });
    try {
      work(remote);
    } finally {
      remote.close();
    }
  }

  /**
   * Give the bytes only staging `s` holds for process addresses [from, to) back to their files, from
   * where the staging is now: before that part of the staging goes.
   */
  private giveBack(s: Staged, from = s.start, to = s.end): void {
    const fds = new Map<string, number>();
    const kept: Hole[] = [];
    try {
      for (const h of this.holes) {
        const end = h.addr + BigInt(h.len);
        const start = h.addr > from ? h.addr : from;
        const stop = end < to ? end : to;
        if (start >= stop) {
          kept.push(h);
          continue;
        }
        const len = Number(stop - start);
        const bytes = Buffer.allocUnsafe(len);
        const at = s.at + (start - s.start);
        const got = processVmReadv(this.stub.pid, bytes, [{ addr: at, len }]);
        if (got !== len)
          throw new FerryError(
            'FERRY_RESTORE_FAILED',
            `read back ${got} of ${len} staged bytes at ${hex(at)}`,
          );
        let fd = fds.get(h.file);
        if (fd === undefined) fds.set(h.file, (fd = openSync(h.file, 'r+')));
        writeSync(fd, bytes, 0, len, h.offset + Number(start - h.addr));
        // What lies outside [from, to) is staging's alone still.
        if (h.addr < start) kept.push({ ...h, len: Number(start - h.addr) });
        if (end > stop)
          kept.push({ ...h, addr: stop, len: Number(end - stop), offset: h.offset + Number(stop - h.addr) });
      }
    } finally {
      for (const fd of fds.values()) closeSync(fd);
    }
    this.holes.splice(0, this.holes.length, ...kept);
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
        // Pages past its new end may be the process's still, in a VMA of their own now (mprotect).
        if (v.end < s.end) this.giveBack(s, v.end, s.end);
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
  moveIntoPlace<V extends LayerVma & { vmFlags: readonly string[] }>(
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
        this.giveBack(s);
        remote.check('munmap(staging)', NR.munmap, s.at, len);
        this.staged.delete(s.start);
        continue;
      }
      remote.check('mremap(staging)', NR.mremap, s.at, len, len, MREMAP.MAYMOVE | MREMAP.FIXED, at);
      s.at = at;
    }
    for (const v of vmas) {
      const s = this.staged.get(v.start);
      if (!s || s.end !== v.end || !isStageable(v) || v.vmFlags.some((f) => MMAP_FLAGS.includes(f))) continue;
      const len = v.end - v.start;
      calls.push({
        name: `mremap(${hex(s.at)} to ${hex(v.start)})`,
        nr: NR.mremap,
        args: [s.at, len, len, MREMAP.MAYMOVE | MREMAP.FIXED, v.start],
      });
      moved.set(v, s.runs);
      this.staged.delete(v.start);
    }
    for (const s of this.staged.values()) {
      this.giveBack(s);
      calls.push({ name: 'munmap(staging)', nr: NR.munmap, args: [s.at, s.end - s.start] });
    }
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

/** Bytes placed in staging at most per process_vm_writev. */
const PLACE_BATCH = 1 << 20;

/**
 * A round's pages part as it arrives (Prefill.placePart()). Pieces of one run of staging gather up to
 * 1 MiB per call: a call per piece as the socket gives them (64 KiB) took twice as long.
 */
class PlacedPart implements PartWriter {
  /** Where the bytes to come go, in order (place()). */
  private readonly queue: Placement[] = [];
  private readonly calls: Promise<void>[] = [];
  /** Bytes of the part so far. */
  private offset = 0;
  /** Pieces gathered for one call: to staging address `at` on. */
  private batch: { at: bigint; pieces: Buffer[]; len: number } | undefined;

  constructor(
    private readonly pid: number,
    private readonly part: string,
    private readonly file: FilePartWriter,
    /** The staging regions, in address order. */
    private readonly staging: readonly Staged[],
    /** The process addresses placed, which this part adds to. */
    private readonly placed: Span[],
    private readonly holes: Hole[],
  ) {}

  place(runs: readonly Placement[]): void {
    this.queue.push(...runs.map((r) => ({ ...r })));
  }

  reserve(bytes: number): void {
    this.file.reserve(bytes);
  }

  /** Resolves when what it started is over (bytes gathered for a call to come are not waited for). */
  write(data: Uint8Array): Promise<void> {
    const writes: Promise<void>[] = [];
    for (let off = 0; off < data.length;) {
      const run = this.queue[0];
      // Bytes no placement speaks for go to the file.
      const n = Math.min(run?.len ?? Infinity, data.length - off);
      const s = run && spanAt(this.staging, run.addr);
      const len = s ? Math.min(n, Number(s.end - run.addr)) : n;
      const piece = Buffer.from(data.buffer, data.byteOffset + off, len);
      if (s) {
        this.file.skip(piece);
        this.hole(run.addr, len);
        const call = this.gather(s.at + (run.addr - s.start), piece);
        if (call) writes.push(call);
      } else {
        writes.push(this.file.write(piece));
      }
      if (run) {
        run.addr += BigInt(len);
        run.len -= len;
        if (run.len === 0) this.queue.shift();
      }
      this.offset += len;
      off += len;
    }
    return Promise.all(writes).then(() => {});
  }

  async close(): Promise<PartSummary> {
    void this.flush();
    await Promise.all(this.calls);
    if (this.queue.length > 0)
      throw new FerryError('FERRY_IMAGE_CORRUPT', `${this.part}: placed beyond its bytes`);
    return this.file.close();
  }

  /** Note `len` bytes for `addr` kept in staging alone, at the part's current offset. */
  private hole(addr: bigint, len: number): void {
    pushSpan(this.placed, addr, addr + BigInt(len));
    const last = this.holes.at(-1);
    if (
      last?.file === this.file.path &&
      last.addr + BigInt(last.len) === addr &&
      last.offset + last.len === this.offset
    )
      last.len += len;
    else this.holes.push({ file: this.file.path, addr, len, offset: this.offset });
  }

  /** Add `piece` for staging address `at`; the call started (its end) if one had to be. */
  private gather(at: bigint, piece: Buffer): Promise<void> | undefined {
    const b = this.batch;
    if (
      b &&
      b.at + BigInt(b.len) === at &&
      b.len + piece.length <= PLACE_BATCH &&
      b.pieces.length < IOV_MAX
    ) {
      b.pieces.push(piece);
      b.len += piece.length;
      return b.len === PLACE_BATCH ? this.flush() : undefined;
    }
    const started = this.flush();
    this.batch = { at, pieces: [piece], len: piece.length };
    return started;
  }

  /** Start the call for the pieces gathered. */
  private flush(): Promise<void> | undefined {
    const b = this.batch;
    if (!b) return undefined;
    this.batch = undefined;
    faultPoint('place');
    const call = processVmWriteBuffersAsync(this.pid, b.pieces, [{ addr: b.at, len: b.len }]).then((got) => {
      if (got !== b.len)
        throw new FerryError('FERRY_RESTORE_FAILED', `placed ${got} of ${b.len} bytes at ${hex(b.at)}`);
    });
    call.catch(() => {}); // awaited by close() too
    this.calls.push(call);
    return call;
  }
}
