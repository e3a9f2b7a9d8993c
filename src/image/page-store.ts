// The page store: page data in pages.img, in address order, all-zero pages left out, optionally as
// zstd frames of 1 MiB; its index (pagemap.img) says where each run of pages goes.
import { compress, decompress } from 'zstd-napi';
import { FerryError } from '../errors.js';
import { encodePageIndex, PAGE, type Frame, type PageEntry, type PageIndex } from './page-index.js';
import type { PartReader, PartSummary, PartWriter } from './sink.js';

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
  pages: PartSummary;
  index: PartSummary;
}

export class PageStoreWriter {
  private readonly entries: PageEntry[] = [];
  private readonly frames: Frame[] = [];
  private readonly writes: Promise<void>[] = [];
  private frame: Buffer | undefined;
  private frameUsed = 0;
  private dataPages = 0;
  private zeroPages = 0;

  constructor(
    private readonly pages: PartWriter,
    private readonly index: PartWriter,
    private readonly compressed: boolean,
  ) {
    if (compressed) this.frame = Buffer.allocUnsafe(FRAME_SIZE);
  }

  /**
   * Store the pages in `data` (whole pages), which belong at `addr`; addresses must ascend. The
   * returned promise settles once `data` is no longer needed (it may be reused then).
   */
  add(addr: bigint, data: Buffer): Promise<void> {
    const writes: Promise<void>[] = [];
    const count = data.length / PAGE;
    let runStart = 0;
    let runZero = count > 0 && isZeroPage(data, 0);
    for (let i = 1; i <= count; i++) {
      const zero = i < count && isZeroPage(data, i * PAGE);
      if (i === count || zero !== runZero) {
        const write = this.addRun(
          addr + BigInt(runStart * PAGE),
          data.subarray(runStart * PAGE, i * PAGE),
          runZero,
        );
        if (write) writes.push(write);
        runStart = i;
        runZero = zero;
      }
    }
    this.writes.push(...writes);
    return Promise.all(writes).then(() => undefined);
  }

  private addRun(addr: bigint, data: Buffer, zero: boolean): Promise<void> | undefined {
    const pages = data.length / PAGE;
    const last = this.entries.at(-1);
    if (last && last.zero === zero && last.addr + BigInt(last.pages * PAGE) === addr) last.pages += pages;
    else this.entries.push({ addr, pages, zero });
    if (zero) {
      this.zeroPages += pages;
      return undefined;
    }
    this.dataPages += pages;
    if (!this.frame) return this.pages.write(data);
    // Compressed: the bytes are copied into the frame, so `data` is free at once.
    this.addToFrames(data);
    return undefined;
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
    const stored = compress(this.frame!.subarray(0, this.frameUsed), { compressionLevel: ZSTD_LEVEL });
    this.writes.push(this.pages.write(stored));
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
    return { dataPages: this.dataPages, zeroPages: this.zeroPages, pages, index: indexPart };
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

  private nextFrame(): Buffer {
    const frame = this.index.frames[this.frameIndex++];
    if (!frame) throw new FerryError('FERRY_IMAGE_CORRUPT', 'pages.img: page data runs past the last frame');
    let raw: Buffer;
    try {
      raw = decompress(this.exact(this.data.read(frame.stored), frame.stored));
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
