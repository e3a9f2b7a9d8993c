// readImage: open an image and check all of it (manifest schema and checksum, every part's size
// and checksum, the page index) before anything is done with it.
import { closeSync, openSync, readSync } from 'node:fs';
import { FerryError } from './errors.js';
import {
  algorithmOf,
  createHasher,
  formatChecksum,
  TREE_CHUNK,
  treeRoot,
  xxh3,
  type Algorithm,
} from './image/hash.js';
import { pageParts } from './image/manifest.js';
import { decodePageIndex, PAGE, type PageIndex } from './image/page-index.js';
import { PageStoreReader } from './image/page-store.js';
import { DirSource, type ImageSource, type PartSummary } from './image/sink.js';
import { resolvePages, type PageLayer, type PageSource } from './image/page-layers.js';
import { resolve } from 'node:path';
import { openImageManifest, type Manifest, type ProcessState } from './state/image.js';
import { runAtOnce } from './sys/call.js';
import { MAP, mmap, munmap, PROT } from './sys/mman.js';
import { hasSystemXxh3, xxh3OfMemory } from './sys/xxhash.js';

/** One process of an image, and where its pages are. */
export interface ProcessImage {
  state: ProcessState;
  /** Page layers, oldest first (the parents' first); the process's own page store last. */
  layers: PageLayer[];
  /** Where each run of the process's pages comes from, in address order. */
  pages: PageSource[];
}

export interface Image extends ProcessImage {
  location: string;
  manifest: Manifest;
  source: ImageSource;
  /** Every process: the dumped one (this image's state, layers and pages) first, then its descendants. */
  processes: ProcessImage[];
}

/** Bytes of a part read at a time while it is hashed: read into a buffer that stays in the CPU's cache. */
const CHUNK = 1 << 20;
let chunk: Buffer | undefined;

function corrupt(message: string): FerryError {
  return new FerryError('FERRY_IMAGE_CORRUPT', message);
}

/** Check a part's size and checksum. */
async function verifyPart(source: ImageSource, name: string, size: number, checksum: string): Promise<void> {
  const path = source.partFile(name);
  const actual = source.partSize(name);
  if (actual !== size) {
    throw corrupt(`${path} is ${actual} bytes, the manifest says ${size}: it is truncated or damaged`);
  }
  const algorithm = algorithmOf(checksum);
  if (!algorithm) throw corrupt(`${path}: the manifest names no checksum algorithm ferry knows`);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw corrupt(`cannot read ${path}: ${String(err)}`);
  }
  let sum: string;
  try {
    sum = await fileChecksum(fd, path, size, algorithm);
  } finally {
    closeSync(fd);
  }
  if (sum !== checksum) throw corrupt(`${path} does not match its checksum: the image is damaged`);
}

/**
 * The checksum by `algorithm` of the first `size` bytes of file `fd` (`path`). A tree checksum's
 * chunks are hashed by libxxhash on libuv's threads at once where it is there (`parallel`), else
 * here, one after another.
 */
export async function fileChecksum(
  fd: number,
  path: string,
  size: number,
  algorithm: Algorithm,
  parallel = hasSystemXxh3(),
): Promise<string> {
  return algorithm === 'xxh3t' && parallel
    ? formatChecksum(algorithm, await treeSum(fd, path, size))
    : streamedSum(fd, path, size, algorithm);
}

/**
 * A tree checksum's root, each chunk hashed by libxxhash straight from the page cache through a
 * read-only mapping, on libuv's threads at once (every CPU hashes).
 */
async function treeSum(fd: number, path: string, size: number): Promise<bigint> {
  if (size <= TREE_CHUNK) {
    const data = Buffer.allocUnsafe(size);
    const got = size === 0 ? 0 : readSync(fd, data, 0, size, 0);
    if (got !== size)
      throw corrupt(`${path} ended at ${got} bytes, the manifest says ${size}: it is truncated`);
    return treeRoot([xxh3(data)]);
  }
  const base = mmap(0n, size, PROT.READ, MAP.SHARED, fd, 0);
  const chunks: (() => Promise<bigint>)[] = [];
  for (let off = 0; off < size; off += TREE_CHUNK)
    chunks.push(() => xxh3OfMemory(base + BigInt(off), Math.min(TREE_CHUNK, size - off)));
  try {
    // Every call is over before the mapping goes, even after a failure.
    return treeRoot(await runAtOnce(chunks));
  } finally {
    munmap(base, size);
  }
}

/** A part's checksum by `algorithm`, read and hashed here a chunk at a time. */
function streamedSum(fd: number, path: string, size: number, algorithm: Algorithm): string {
  const hasher = createHasher(algorithm);
  chunk ??= Buffer.allocUnsafeSlow(CHUNK);
  for (let off = 0; off < size;) {
    const n = readSync(fd, chunk, 0, Math.min(CHUNK, size - off), off);
    if (n === 0) throw corrupt(`${path} ended at ${off} bytes, the manifest says ${size}: it is truncated`);
    hasher.update(chunk.subarray(0, n));
    off += n;
  }
  return hasher.digest();
}

function checkVmas(state: ProcessState, location: string): void {
  let previous = 0n;
  for (const v of state.vmas) {
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

/** Parents followed at most, so that a loop of parents ends in an error. */
const MAX_CHAIN = 256;

function readIndex(source: ImageSource, name: string, size: number): PageIndex {
  const reader = source.openPart(name);
  try {
    return decodePageIndex(reader.read(size));
  } finally {
    reader.close();
  }
}

/** Page layers of `names` in this image, oldest first. */
function ownLayers(
  source: ImageSource,
  manifest: Manifest,
  names: readonly { pages: string; index: string }[],
): PageLayer[] {
  return names.map(({ pages, index: indexName }) => {
    const indexPart = manifest.parts[indexName];
    if (!manifest.parts[pages] || !indexPart)
      throw new FerryError(
        'FERRY_IMAGE_INVALID',
        `${source.location}: the manifest lists no ${pages} or ${indexName}`,
      );
    const index = readIndex(source, indexName, indexPart.size);
    return {
      name: `${source.location}/${pages}`,
      index,
      file: source.partFile(pages),
      part: pages,
      open: () => new PageStoreReader(index, source.openPart(pages)),
    };
  });
}

/** Read and verify one image and, through its parent, every image it builds on. */
async function openChain(
  location: string,
  depth: number,
  expected?: string,
  verified?: Record<string, PartSummary>,
  opened?: Manifest,
): Promise<{ manifest: Manifest; source: ImageSource; layers: PageLayer[] }> {
  const source = new DirSource(location);
  const manifest = opened ?? openImageManifest(source.readManifest(), location);
  if (expected !== undefined && manifest.checksum !== expected) {
    throw new FerryError(
      'FERRY_IMAGE_CORRUPT',
      `${location} is not the parent image its child was dumped on (its manifest changed): the chain is broken`,
    );
  }
  for (const state of [manifest.state, ...manifest.children]) checkVmas(state, location);
  const unverified = Object.entries(manifest.parts).filter(([name, part]) => {
    const seen = verified?.[name];
    return !(
      seen &&
      seen.size === part.size &&
      seen.checksum === part.checksum &&
      source.partSize(name) === part.size
    );
  });
  await Promise.all(unverified.map(([name, part]) => verifyPart(source, name, part.size, part.checksum)));
  const layers = ownLayers(source, manifest, [...manifest.layers, pageParts()]);
  const parent = manifest.parent;
  if (!parent) return { manifest, source, layers };
  if (depth >= MAX_CHAIN)
    throw new FerryError(
      'FERRY_IMAGE_INVALID',
      `${location}: more than ${MAX_CHAIN} parent images in a chain`,
    );
  const above = await openChain(resolve(location, parent.path), depth + 1, parent.checksum);
  return { manifest, source, layers: [...above.layers.map((l) => ({ ...l, part: null })), ...layers] };
}

/**
 * Open the image at `location` (a directory) and verify every part of it and of its parents. Parts
 * in `verified` were hashed as they were written (a received migration): when the manifest agrees
 * with those sums, they are not read again. `opened` is its manifest, when opened already (with
 * openImageManifest(), which checks it).
 */
export async function readImage(
  location: string,
  verified?: Record<string, PartSummary>,
  opened?: Manifest,
): Promise<Image> {
  const { manifest, source, layers } = await openChain(location, 0, undefined, verified, opened);
  const root = { state: manifest.state, layers, pages: resolvePages(layers) };
  const children = manifest.children.map((state) => {
    const own = ownLayers(source, manifest, [pageParts(state.pid)]);
    return { state, layers: own, pages: resolvePages(own) };
  });
  return { location, manifest, source, ...root, processes: [root, ...children] };
}
