// readImage: open an image and check all of it (manifest schema and checksum, every part's size
// and checksum, the page index) before anything is done with it.
import { closeSync, openSync } from 'node:fs';
import { FerryError } from './errors.js';
import { createHasher, initHashing } from './image/hash.js';
import { openManifest } from './image/manifest.js';
import { decodePageIndex, PAGE, type PageIndex } from './image/page-index.js';
import { PageStoreReader } from './image/page-store.js';
import { DirSource, type ImageSource } from './image/sink.js';
import { manifestRecord, type Manifest } from './state/image.js';
import { withFileBytes } from './sys/mman.js';

export interface Image {
  location: string;
  manifest: Manifest;
  index: PageIndex;
  source: ImageSource;
  /** A reader over the page data. */
  openPages(): PageStoreReader;
}

/** Bytes of a part mapped at a time while it is hashed. */
const WINDOW = 64 << 20;

function corrupt(message: string): FerryError {
  return new FerryError('FERRY_IMAGE_CORRUPT', message);
}

/** Check a part's size and checksum, hashing it straight from the page cache. */
function verifyPart(source: ImageSource, name: string, size: number, checksum: string): void {
  const path = source.partFile(name);
  const actual = source.partSize(name);
  if (actual !== size) {
    throw corrupt(`${path} is ${actual} bytes, the manifest says ${size}: it is truncated or damaged`);
  }
  const hasher = createHasher();
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw corrupt(`cannot read ${path}: ${String(err)}`);
  }
  try {
    for (let off = 0; off < size; off += WINDOW)
      withFileBytes(fd, off, Math.min(WINDOW, size - off), (bytes) => hasher.update(bytes));
  } finally {
    closeSync(fd);
  }
  if (hasher.digest() !== checksum)
    throw corrupt(`${path} does not match its checksum: the image is damaged`);
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
  for (const [name, part] of Object.entries(manifest.parts))
    verifyPart(source, name, part.size, part.checksum);
  const indexReader = source.openPart('pagemap.img');
  let index: PageIndex;
  try {
    index = decodePageIndex(indexReader.read(manifest.parts['pagemap.img']!.size));
  } finally {
    indexReader.close();
  }
  return {
    location,
    manifest,
    index,
    source,
    openPages: () => new PageStoreReader(index, source.openPart('pages.img')),
  };
}
