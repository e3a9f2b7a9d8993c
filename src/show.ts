// What an image holds, for people: the process, its VMAs and what was stored of each, registers,
// signal dispositions, descriptors; and one VMA's stored bytes for forensic tools.
import { FerryError } from './errors.js';
import { PAGE } from './image/page-index.js';
import { LayerReader } from './image/page-layers.js';
import type { Image, ProcessImage } from './read-image.js';
import type { VmaRecord } from './memory/vmas.js';

export interface VmaContent {
  vma: VmaRecord;
  /** Pages stored with data, and pages recorded as all-zero. */
  storedPages: number;
  zeroPages: number;
}

/** Stored and zero pages per VMA, from the page index (and the layers it builds on). */
export function vmaContents(image: ProcessImage): VmaContent[] {
  const out = image.state.vmas.map((vma) => ({ vma, storedPages: 0, zeroPages: 0 }));
  let i = 0;
  for (const src of image.pages) {
    for (let addr = src.start; addr < src.end; addr += BigInt(PAGE)) {
      while (i < out.length && out[i]!.vma.end <= addr) i++;
      const slot = out[i];
      if (!slot || slot.vma.start > addr) continue;
      if (src.layer === null) slot.zeroPages++;
      else slot.storedPages++;
    }
  }
  return out;
}

/**
 * The VMA an argument names: an address inside it (0x...), its path or [pseudo-name], or its kind
 * (`heap`, `stack`, ...).
 */
export function findVma(image: ProcessImage, which: string): VmaRecord {
  const vmas = image.state.vmas;
  const byName = vmas.filter((v) => v.name === which);
  const found = /^0x[0-9a-f]+$/i.test(which)
    ? vmas.filter((v) => v.start <= BigInt(which) && BigInt(which) < v.end)
    : byName.length > 0
      ? byName
      : vmas.filter((v) => v.kind === which);
  if (found.length === 0)
    throw new FerryError('FERRY_USAGE', `process ${image.state.pid} has no VMA ${which}`);
  if (found.length > 1) {
    const list = found.map((v) => `0x${v.start.toString(16)}`).join(', ');
    throw new FerryError(
      'FERRY_USAGE',
      `${which} names ${found.length} VMAs (${list}): give an address instead`,
    );
  }
  return found[0]!;
}

/** The most bytes of a VMA handed out at once, so that a huge one is never held whole. */
const CHUNK = 16 << 20;
let zeroChunk: Buffer | undefined;

function* zeros(length: bigint): Generator<Buffer> {
  zeroChunk ??= Buffer.alloc(CHUNK);
  for (let left = length; left > 0n;) {
    const n = left < BigInt(CHUNK) ? Number(left) : CHUNK;
    yield zeroChunk.subarray(0, n);
    left -= BigInt(n);
  }
}

/**
 * Every byte of one VMA as the image has it, in chunks: stored pages as stored, every other page
 * as zeros (pages never touched, or not stored by a partial dump).
 */
export function* vmaBytes(image: ProcessImage, vma: VmaRecord): Generator<Buffer> {
  const reader = new LayerReader(image.layers);
  let at = vma.start;
  try {
    for (const src of image.pages) {
      if (src.end <= vma.start) continue;
      if (src.start >= vma.end) break;
      const from = src.start > vma.start ? src.start : vma.start;
      const to = src.end < vma.end ? src.end : vma.end;
      if (from > at) yield* zeros(from - at);
      if (src.layer === null) {
        yield* zeros(to - from);
      } else {
        for (let a = from; a < to;) {
          const n = to - a < BigInt(CHUNK) ? Number(to - a) : CHUNK;
          yield reader.read(src.layer, src.offset + Number(a - src.start), n);
          a += BigInt(n);
        }
      }
      at = to;
    }
  } finally {
    reader.close();
  }
  if (at < vma.end) yield* zeros(vma.end - at);
}

/** The process of an image with PID `pid` (as dumped); the dumped process itself by default. */
export function findProcess(image: Image, pid?: number): ProcessImage {
  if (pid === undefined) return image;
  const found = image.processes.find((p) => p.state.pid === pid);
  if (!found) {
    const pids = image.processes.map((p) => p.state.pid).join(', ');
    throw new FerryError('FERRY_USAGE', `${image.location} holds no process ${pid} (it holds ${pids})`);
  }
  return found;
}
