// readImage: open an image and check all of it (manifest schema and checksum, every part's size
// and checksum, the page index) before anything is done with it.
import { totalmem } from 'node:os';
import { FerryError } from './errors.js';
import { createHasher, initHashing } from './image/hash.js';
import { openManifest } from './image/manifest.js';
import { decodePageIndex, PAGE, type PageIndex } from './image/page-index.js';
import { PageStoreReader } from './image/page-store.js';
import { DirSource, type ImageSource, type PartReader } from './image/sink.js';
import { manifestRecord, type Manifest } from './state/image.js';

export interface Image {
  location: string;
  manifest: Manifest;
  index: PageIndex;
  source: ImageSource;
  /** A reader over the page data, from memory when verification kept it. */
  openPages(): PageStoreReader;
}

const READ_CHUNK = 8 << 20;
/** Page data up to this size stays in memory after verification, so restore does not read it twice. */
const KEEP_LIMIT = Math.min(totalmem() / 4, 4 * 2 ** 30);

function corrupt(message: string): FerryError {
  return new FerryError('FERRY_IMAGE_CORRUPT', message);
}

/** Read a part through, checking size and checksum; returns its bytes when `keep`. */
function verifyPart(
  source: ImageSource,
  name: string,
  size: number,
  checksum: string,
  keep: boolean,
): Buffer[] | null {
  const actual = source.partSize(name);
  if (actual !== size) {
    throw corrupt(
      `${source.location}/${name} is ${actual} bytes, the manifest says ${size}: it is truncated or damaged`,
    );
  }
  const hasher = createHasher();
  const chunks: Buffer[] = [];
  const reader = source.openPart(name);
  try {
    for (let done = 0; done < size;) {
      const chunk = reader.read(Math.min(READ_CHUNK, size - done));
      if (chunk.length === 0) throw corrupt(`${source.location}/${name} ended early`);
      hasher.update(chunk);
      if (keep) chunks.push(chunk);
      done += chunk.length;
    }
  } finally {
    reader.close();
  }
  if (hasher.digest() !== checksum) {
    throw corrupt(`${source.location}/${name} does not match its checksum: the image is damaged`);
  }
  return keep ? chunks : null;
}

/** A part reader over bytes already in memory. */
function memoryReader(chunks: Buffer[]): PartReader {
  let index = 0;
  let offset = 0;
  return {
    read(length) {
      const parts: Buffer[] = [];
      let need = length;
      while (need > 0 && index < chunks.length) {
        const chunk = chunks[index]!;
        const take = chunk.subarray(offset, offset + need);
        parts.push(take);
        need -= take.length;
        offset += take.length;
        if (offset === chunk.length) {
          index++;
          offset = 0;
        }
      }
      return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    },
    close() {},
  };
}

function checkVmas(manifest: Manifest, location: string): void {
  let previous = 0n;
  for (const v of manifest.state.vmas) {
    if (
      v.start < previous ||
      v.end <= v.start ||
      v.start % BigInt(PAGE) !== 0n ||
      v.end % BigInt(PAGE) !== 0n
    ) {
      throw new FerryError(
        'FERRY_IMAGE_INVALID',
        `${location}: VMA 0x${v.start.toString(16)} is out of order or malformed`,
      );
    }
    previous = v.end;
  }
}

/** Open the image at `location` (a directory) and verify every part of it. */
export async function readImage(location: string): Promise<Image> {
  await initHashing();
  const source = new DirSource(location);
  const manifest = openManifest(source.readManifest(), manifestRecord, location);
  checkVmas(manifest, location);
  for (const name of ['pages.img', 'pagemap.img']) {
    if (!manifest.parts[name])
      throw new FerryError('FERRY_IMAGE_INVALID', `${location}: the manifest lists no ${name}`);
  }
  let pages: Buffer[] | null = null;
  let indexBytes: Buffer | null = null;
  for (const [name, part] of Object.entries(manifest.parts)) {
    const kept = verifyPart(
      source,
      name,
      part.size,
      part.checksum,
      name === 'pagemap.img' || (name === 'pages.img' && part.size <= KEEP_LIMIT),
    );
    if (name === 'pages.img') pages = kept;
    if (name === 'pagemap.img') indexBytes = Buffer.concat(kept!);
  }
  const index = decodePageIndex(indexBytes!);
  return {
    location,
    manifest,
    index,
    source,
    openPages: () => new PageStoreReader(index, pages ? memoryReader(pages) : source.openPart('pages.img')),
  };
}
