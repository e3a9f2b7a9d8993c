// What an image holds, for people: the process, its VMAs and what was stored of each, registers,
// signal dispositions, descriptors; and one VMA's stored bytes for forensic tools.
import { FerryError } from './errors.js';
import { PAGE } from './image/page-index.js';
import type { Image } from './read-image.js';
import type { VmaRecord } from './state/mem-vmas.js';

export interface VmaContent {
  vma: VmaRecord;
  /** Pages stored with data, and pages recorded as all-zero. */
  storedPages: number;
  zeroPages: number;
}

/** Stored and zero pages per VMA, from the page index. */
export function vmaContents(image: Image): VmaContent[] {
  const out = image.manifest.state.vmas.map((vma) => ({ vma, storedPages: 0, zeroPages: 0 }));
  let i = 0;
  for (const e of image.index.entries) {
    for (let p = 0; p < e.pages; p++) {
      const addr = e.addr + BigInt(p * PAGE);
      while (i < out.length && out[i]!.vma.end <= addr) i++;
      const slot = out[i];
      if (!slot || slot.vma.start > addr) continue;
      if (e.zero) slot.zeroPages++;
      else slot.storedPages++;
    }
  }
  return out;
}

/**
 * The VMA an argument names: an address inside it (0x...), its path or [pseudo-name], or its kind
 * (`heap`, `stack`, ...).
 */
export function findVma(image: Image, which: string): VmaRecord {
  const vmas = image.manifest.state.vmas;
  const byName = vmas.filter((v) => v.name === which);
  const found = /^0x[0-9a-f]+$/i.test(which)
    ? vmas.filter((v) => v.start <= BigInt(which) && BigInt(which) < v.end)
    : byName.length > 0
      ? byName
      : vmas.filter((v) => v.kind === which);
  if (found.length === 0) throw new FerryError('FERRY_USAGE', `${image.location} has no VMA ${which}`);
  if (found.length > 1) {
    const list = found.map((v) => `0x${v.start.toString(16)}`).join(', ');
    throw new FerryError(
      'FERRY_USAGE',
      `${which} names ${found.length} VMAs (${list}): give an address instead`,
    );
  }
  return found[0]!;
}

const ZERO_CHUNK = Buffer.alloc(16 << 20);

function* zeros(length: bigint): Generator<Buffer> {
  for (let left = length; left > 0n;) {
    const n = left < BigInt(ZERO_CHUNK.length) ? Number(left) : ZERO_CHUNK.length;
    yield ZERO_CHUNK.subarray(0, n);
    left -= BigInt(n);
  }
}

/**
 * Every byte of one VMA as the image has it, in chunks: stored pages as stored, every other page
 * as zeros (pages never touched, or not stored by a partial dump).
 */
export function* vmaBytes(image: Image, vma: VmaRecord): Generator<Buffer> {
  const reader = image.openPages();
  let at = vma.start;
  try {
    for (const e of image.index.entries) {
      const bytes = e.pages * PAGE;
      const data = e.zero ? null : reader.read(bytes);
      const end = e.addr + BigInt(bytes);
      if (end <= vma.start) continue;
      if (e.addr >= vma.end) break;
      const from = e.addr > vma.start ? e.addr : vma.start;
      const to = end < vma.end ? end : vma.end;
      if (from > at) yield* zeros(from - at);
      if (data) yield data.subarray(Number(from - e.addr), Number(to - e.addr));
      else yield* zeros(to - from);
      at = to;
    }
  } finally {
    reader.close();
  }
  if (at < vma.end) yield* zeros(vma.end - at);
}
