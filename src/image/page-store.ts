// The page store: page data in pages.img, in address order, all-zero pages left out, optionally as
// zstd frames of 1 MiB; its index (pagemap.img) says where each run of pages goes.
import { FerryError } from '../errors.js';
import {
  encodePageIndex,
  PAGE,
  type Frame,
  type PageEntry,
  type PageIndex,
  type PageKind,
} from './page-index.js';
import type { PartReader, PartSummary, PartWriter, Placement } from './sink.js';
import { zstdNapi } from '../sys/packages.js';

export const FRAME_SIZE = 1 << 20;
const ZSTD_LEVEL = 1;
const ZERO_PAGE = Buffer.alloc(PAGE);

export function isZeroPage(buf: Buffer, off: number): boolean {
  // Most pages that are not zero differ in their first bytes: look there before comparing it all.
  return buf[off] === 0 && buf[off + 8] === 0 && buf.compare(ZERO_PAGE, 0, PAGE, off, off + PAGE) === 0;
}

export interface PageStoreSummary {
  /** Pages stored as data. */
  dataPages: number;
  /** Pages found all-zero and not stored. */
  zeroPages: number;
  /** Pages recorded as unchanged since an earlier layer. */
  earlierPages: number;
  pages: PartSummary;
  index: PartSummary;
}

/** Pages handed to the store: their bytes are in the room, unless they are unchanged (`earlier`). */
export interface StoredRange {
  addr: bigint;
  len: number;
  earlier?: boolean;
}

/** Bytes of `ranges` that take room (those not marked `earlier`). */
export const roomBytes = (ranges: readonly StoredRange[]): number =>
  ranges.reduce((n, r) => (r.earlier ? n : n + r.len), 0);

export class PageStoreWriter {
  private readonly entries: PageEntry[] = [];
  private readonly frames: Frame[] = [];
  private readonly writes: Promise<void>[] = [];
  /**
   * Where pages are read (touched when made, so no page faults while the process is frozen).
   * Uncompressed, two take turns: one is written out while the next batch is read into the other.
   */
  private readonly staging: Buffer[];
  /** The write still reading each staging buffer. */
  private readonly writing: (Promise<void> | undefined)[];
  private readonly frame: Buffer | undefined;
  private next = 0;
  /** The staging buffer the last room() gave, and how much of it. */
  private current: Buffer | undefined;
  private currentIndex = 0;
  private frameUsed = 0;
  private dataPages = 0;
  private zeroPages = 0;
  private earlierPages = 0;

  constructor(
    private readonly pages: PartWriter,
    private readonly index: PartWriter,
    private readonly compressed: boolean,
    /** The most bytes one room() gives. */
    readonly maxRoom: number,
  ) {
    if (compressed) this.frame = Buffer.allocUnsafeSlow(FRAME_SIZE).fill(0);
    this.staging = Array.from({ length: compressed ? 1 : 2 }, () => Buffer.allocUnsafeSlow(maxRoom).fill(0));
    this.writing = this.staging.map(() => undefined);
  }

  /** Make room for up to `bytes` more bytes of pages now: a full disk is refused here. */
  reserve(bytes: number): void {
    if (!this.compressed) this.pages.reserve(bytes);
  }

  /** Where to put the next `bytes` bytes of pages (then call take()). */
  async room(bytes: number): Promise<Buffer> {
    if (bytes > this.maxRoom) throw new FerryError('FERRY_INTERNAL', `room(${bytes}) beyond ${this.maxRoom}`);
    const i = this.next;
    this.next = (i + 1) % this.staging.length;
    await this.writing[i];
    this.currentIndex = i;
    this.current = this.staging[i]!.subarray(0, bytes);
    return this.current;
  }

  /**
   * Store the pages put in the last room(), which belong at `ranges` in order (addresses ascend
   * from call to call). All-zero pages are left out. Ranges marked `earlier` have no bytes in the
   * room: they are recorded as unchanged since an earlier layer. `ranges` may cover less than the
   * room (the rest of it was not filled).
   */
  take(ranges: readonly StoredRange[]): void {
    const bytes = roomBytes(ranges);
    if (!this.current || this.current.length < bytes)
      throw new FerryError('FERRY_INTERNAL', 'take() does not match the last room()');
    const room = this.current.subarray(0, bytes);
    this.current = undefined;
    let kept = 0;
    let off = 0;
    /** Where the bytes kept go, for a target that places them as they come. */
    const placed: Placement[] = [];
    for (const r of ranges) {
      if (r.earlier) {
        this.addEntry(r.addr, r.len / PAGE, 'earlier');
        continue;
      }
      const count = r.len / PAGE;
      let runStart = 0;
      let runZero = count > 0 && isZeroPage(room, off);
      for (let i = 1; i <= count; i++) {
        const zero = i < count && isZeroPage(room, off + i * PAGE);
        if (i === count || zero !== runZero) {
          this.addEntry(r.addr + BigInt(runStart * PAGE), i - runStart, runZero ? 'zero' : 'data');
          if (!runZero) {
            const from = off + runStart * PAGE;
            const bytes = (i - runStart) * PAGE;
            if (this.frame) this.addToFrames(room.subarray(from, from + bytes));
            else if (from !== kept) room.copy(room, kept, from, from + bytes);
            kept += bytes;
            placed.push({ addr: r.addr + BigInt(runStart * PAGE), len: bytes });
          }
          runStart = i;
          runZero = zero;
        }
      }
      off += r.len;
    }
    if (!this.frame && kept > 0) {
      this.pages.place?.(placed);
      this.writing[this.currentIndex] = this.write(room.subarray(0, kept));
    }
  }

  private write(data: Buffer): Promise<void> {
    const written = this.pages.write(data);
    written.catch(() => {}); // awaited by room() or finish(); a failure must not go unhandled meanwhile
    this.writes.push(written);
    return written;
  }

  private addEntry(addr: bigint, pages: number, kind: PageKind): void {
    const last = this.entries.at(-1);
    if (last && last.kind === kind && last.addr + BigInt(last.pages * PAGE) === addr) last.pages += pages;
    else this.entries.push({ addr, pages, kind });
    if (kind === 'zero') this.zeroPages += pages;
    else if (kind === 'data') this.dataPages += pages;
    else this.earlierPages += pages;
  }

  private addToFrames(data: Buffer): void {
    for (let off = 0; off < data.length;) {
      const n = Math.min(data.length - off, FRAME_SIZE - this.frameUsed);
      data.copy(this.frame!, this.frameUsed, off, off + n);
      this.frameUsed += n;
      off += n;
      if (this.frameUsed === FRAME_SIZE) this.flushFrame();
    }
  }

  private flushFrame(): void {
    if (this.frameUsed === 0) return;
    const stored = zstdNapi().compress(this.frame!.subarray(0, this.frameUsed), {
      compressionLevel: ZSTD_LEVEL,
    });
    void this.write(stored);
    this.frames.push({ stored: stored.length, raw: this.frameUsed });
    this.frameUsed = 0;
  }

  async finish(): Promise<PageStoreSummary> {
    if (this.frame) this.flushFrame();
    const index: PageIndex = {
      compressed: this.compressed,
      frameSize: this.compressed ? FRAME_SIZE : 0,
      entries: this.entries,
      frames: this.frames,
    };
    this.writes.push(this.index.write(encodePageIndex(index)));
    await Promise.all(this.writes);
    const [pages, indexPart] = await Promise.all([this.pages.close(), this.index.close()]);
    return {
      dataPages: this.dataPages,
      zeroPages: this.zeroPages,
      earlierPages: this.earlierPages,
      pages,
      index: indexPart,
    };
  }
}

/** Reads the stored page data back, in the order the index lists it. */
export class PageStoreReader {
  private frameIndex = 0;
  private pending: Buffer = Buffer.alloc(0);

  constructor(
    readonly index: PageIndex,
    private readonly data: PartReader,
  ) {}

  /** The next `bytes` bytes of page data, in `into` when given (it must hold `bytes` bytes). */
  read(bytes: number, into?: Buffer): Buffer {
    if (!this.index.compressed) return this.exact(this.data.read(bytes, into), bytes);
    const out = into ?? Buffer.allocUnsafe(bytes);
    for (let done = 0; done < bytes;) {
      if (this.pending.length === 0) this.pending = this.nextFrame();
      const n = this.pending.copy(out, done, 0, Math.min(this.pending.length, bytes - done));
      this.pending = this.pending.subarray(n);
      done += n;
    }
    return out.subarray(0, bytes);
  }

  /** Pass over the next `bytes` bytes of page data. */
  skip(bytes: number): void {
    const scratch = Buffer.allocUnsafe(Math.min(bytes, FRAME_SIZE));
    for (let left = bytes; left > 0;) {
      const n = Math.min(left, scratch.length);
      this.read(n, scratch);
      left -= n;
    }
  }

  private nextFrame(): Buffer {
    const frame = this.index.frames[this.frameIndex++];
    if (!frame) throw new FerryError('FERRY_IMAGE_CORRUPT', 'pages.img: page data runs past the last frame');
    let raw: Buffer;
    try {
      raw = zstdNapi().decompress(this.exact(this.data.read(frame.stored), frame.stored));
    } catch (err) {
      if (err instanceof FerryError) throw err;
      throw new FerryError(
        'FERRY_IMAGE_CORRUPT',
        `pages.img: frame ${this.frameIndex - 1} does not decompress`,
        {
          cause: err,
        },
      );
    }
    return this.exact(raw, frame.raw);
  }

  private exact(buf: Buffer, bytes: number): Buffer {
    if (buf.length !== bytes)
      throw new FerryError('FERRY_IMAGE_CORRUPT', 'pages.img is shorter than its index says');
    return buf;
  }

  close(): void {
    this.data.close();
  }
}
