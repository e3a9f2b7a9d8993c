// pagemap.img: the index of the page data in pages.img (CRIU keeps pagemap records apart from the
// raw pages the same way). Little-endian binary:
//   header  magic "FERRYPGS", u32 version, u32 flags (1 = zstd frames), u32 entries, u32 frames,
//           u32 frame size, u32 reserved
//   entry   u64 address, u32 pages, u32 kind (0 = data stored in order in pages.img, 1 = zero,
//           2 = unchanged: the data is in an earlier layer of the image or its parent)
//   frame   u32 stored size, u32 raw size (compressed images only)
import { FerryError } from '../errors.js';

export const PAGE = 4096;
const MAGIC = Buffer.from('FERRYPGS', 'latin1');
const VERSION = 1;
const HEADER = 32;
const ENTRY = 16;
const FRAME = 8;
const MAX_ENTRIES = 1 << 26;
export const FLAG_ZSTD = 1;

/**
 * 'data': stored here, in order; 'zero': all zero, nothing stored, they read back as zeros;
 * 'earlier': unchanged since an earlier layer, which holds them.
 */
export const PAGE_KINDS = ['data', 'zero', 'earlier'] as const;
export type PageKind = (typeof PAGE_KINDS)[number];

export interface PageEntry {
  addr: bigint;
  pages: number;
  kind: PageKind;
}

export interface Frame {
  stored: number;
  raw: number;
}

export interface PageIndex {
  compressed: boolean;
  frameSize: number;
  entries: PageEntry[];
  frames: Frame[];
}

export function encodePageIndex(index: PageIndex): Buffer {
  const buf = Buffer.alloc(HEADER + index.entries.length * ENTRY + index.frames.length * FRAME);
  MAGIC.copy(buf, 0);
  buf.writeUInt32LE(VERSION, 8);
  buf.writeUInt32LE(index.compressed ? FLAG_ZSTD : 0, 12);
  buf.writeUInt32LE(index.entries.length, 16);
  buf.writeUInt32LE(index.frames.length, 20);
  buf.writeUInt32LE(index.frameSize, 24);
  let off = HEADER;
  for (const e of index.entries) {
    buf.writeBigUInt64LE(e.addr, off);
    buf.writeUInt32LE(e.pages, off + 8);
    buf.writeUInt32LE(PAGE_KINDS.indexOf(e.kind), off + 12);
    off += ENTRY;
  }
  for (const f of index.frames) {
    buf.writeUInt32LE(f.stored, off);
    buf.writeUInt32LE(f.raw, off + 4);
    off += FRAME;
  }
  return buf;
}

function corrupt(why: string): FerryError {
  return new FerryError('FERRY_IMAGE_CORRUPT', `pagemap.img: ${why}`);
}

/** Decode and check an index: hostile input gets a clear error, never a crash or a huge allocation. */
export function decodePageIndex(buf: Buffer): PageIndex {
  if (buf.length < HEADER || !buf.subarray(0, 8).equals(MAGIC)) throw corrupt('not a ferry page index');
  const version = buf.readUInt32LE(8);
  if (version !== VERSION) throw corrupt(`version ${version}; this ferry reads version ${VERSION}`);
  const flags = buf.readUInt32LE(12);
  const count = buf.readUInt32LE(16);
  const frameCount = buf.readUInt32LE(20);
  const frameSize = buf.readUInt32LE(24);
  if (flags & ~FLAG_ZSTD) throw corrupt(`unknown flags 0x${flags.toString(16)}`);
  if (count > MAX_ENTRIES || frameCount > MAX_ENTRIES) throw corrupt('too many entries');
  if (buf.length !== HEADER + count * ENTRY + frameCount * FRAME)
    throw corrupt('size does not match its counts');
  const compressed = (flags & FLAG_ZSTD) !== 0;
  if (!compressed && frameCount !== 0) throw corrupt('frames in an uncompressed index');
  const entries: PageEntry[] = [];
  let off = HEADER;
  let previousEnd = 0n;
  let dataPages = 0;
  for (let i = 0; i < count; i++, off += ENTRY) {
    const addr = buf.readBigUInt64LE(off);
    const pages = buf.readUInt32LE(off + 8);
    const kind = buf.readUInt32LE(off + 12);
    if (addr % BigInt(PAGE) !== 0n || pages === 0 || kind >= PAGE_KINDS.length || addr < previousEnd) {
      throw corrupt(`entry ${i} (0x${addr.toString(16)}, ${pages} pages) is out of order or malformed`);
    }
    previousEnd = addr + BigInt(pages * PAGE);
    if (kind === 0) dataPages += pages;
    entries.push({ addr, pages, kind: PAGE_KINDS[kind]! });
  }
  const frames: Frame[] = [];
  let raw = 0;
  for (let i = 0; i < frameCount; i++, off += FRAME) {
    const f = { stored: buf.readUInt32LE(off), raw: buf.readUInt32LE(off + 4) };
    if (f.raw === 0 || f.raw > frameSize || f.stored === 0) throw corrupt(`frame ${i} is malformed`);
    raw += f.raw;
    frames.push(f);
  }
  if (compressed && raw !== dataPages * PAGE) throw corrupt('frames do not add up to the stored pages');
  return { compressed, frameSize, entries, frames };
}
