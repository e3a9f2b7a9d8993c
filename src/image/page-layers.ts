// Page layers. An image's pages may come in layers, oldest first: its parent's (an incremental dump),
// the rounds of a pre-copy migration, and its own pages last. The newest layer's index lists every
// page the process had when it was dumped; the pages it marks 'earlier' are unchanged since an older
// layer, which holds them (or an older layer's own 'earlier' mark leads on).
import { FerryError } from '../errors.js';
import { PAGE, type PageIndex } from './page-index.js';
import type { PageStoreReader } from './page-store.js';
import { overlaySpans } from '../vma/spans.js';

export interface PageLayer {
  /** For messages: where the layer is (image directory and part). */
  name: string;
  index: PageIndex;
  /** The file holding the layer's page data (an uncompressed layer is read straight from it). */
  file: string;
  /** The part holding its data in the image opened (null for a parent image's layers). */
  part: string | null;
  open(): PageStoreReader;
}

/** Where a run [start, end) of the process's pages comes from: a layer's data, or zeros (layer null). */
export interface PageSource {
  start: bigint;
  end: bigint;
  layer: number | null;
  /** Bytes into the layer's page data (uncompressed) where `start`'s page is. */
  offset: number;
}

/** `src` cut to [start, end), which lies inside it. */
export function clipSource(src: PageSource, start: bigint, end: bigint): PageSource {
  const offset = src.layer === null ? 0 : src.offset + Number(start - src.start);
  return { start, end, layer: src.layer, offset };
}

/** The sources of one layer's entries, its 'earlier' pages looked up in `older` (sorted, disjoint). */
function layerSources(
  index: PageIndex,
  layer: number,
  older: readonly PageSource[],
  name: string,
): PageSource[] {
  const out: PageSource[] = [];
  let offset = 0;
  let j = 0;
  for (const e of index.entries) {
    const start = e.addr;
    const end = start + BigInt(e.pages * PAGE);
    if (e.kind === 'data') {
      out.push({ start, end, layer, offset });
      offset += e.pages * PAGE;
    } else if (e.kind === 'zero') {
      out.push({ start, end, layer: null, offset: 0 });
    } else {
      let at = start;
      while (j < older.length && older[j]!.end <= at) j++;
      for (; at < end && j < older.length && older[j]!.start <= at;) {
        const src = older[j]!;
        const stop = src.end < end ? src.end : end;
        out.push(clipSource(src, at, stop));
        at = stop;
        if (src.end <= at) j++;
      }
      if (at < end) {
        throw new FerryError(
          'FERRY_IMAGE_CORRUPT',
          `${name}: page 0x${at.toString(16)} is marked unchanged, but no earlier layer holds it`,
        );
      }
    }
  }
  return out;
}

/**
 * Where every page of the newest layer comes from, in address order. A page marked unchanged that no
 * older layer holds makes the image corrupt.
 */
export function resolvePages(layers: readonly PageLayer[]): PageSource[] {
  let seen: PageSource[] = [];
  for (let i = 0; i < layers.length; i++) {
    const own = layerSources(layers[i]!.index, i, seen, layers[i]!.name);
    if (i === layers.length - 1) return own;
    seen = overlaySpans(seen, own, clipSource);
  }
  return [];
}

/** Reads page data from any layer, each layer front to back (sources in address order do that). */
export class LayerReader {
  private readonly open = new Map<number, { reader: PageStoreReader; at: number }>();

  constructor(private readonly layers: readonly PageLayer[]) {}

  /** `bytes` bytes of `layer`'s data from `offset`, into `into` when given. */
  read(layer: number, offset: number, bytes: number, into?: Buffer): Buffer {
    let r = this.open.get(layer);
    if (!r) this.open.set(layer, (r = { reader: this.layers[layer]!.open(), at: 0 }));
    if (offset < r.at) throw new FerryError('FERRY_INTERNAL', `layer ${layer} read backwards`);
    r.reader.skip(offset - r.at);
    const out = r.reader.read(bytes, into);
    r.at = offset + bytes;
    return out;
  }

  close(): void {
    for (const r of this.open.values()) r.reader.close();
    this.open.clear();
  }
}
