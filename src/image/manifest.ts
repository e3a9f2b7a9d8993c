// manifest.json: the envelope every image has (format, version, the host it was made on, each
// part's size and checksum) around the process state, and a checksum over all of it.
import { FerryError } from '../errors.js';
import { algorithmOf, CHECKSUM, hashBytes } from './hash.js';
import { serialize } from './json.js';
import {
  array,
  hex64,
  integer,
  literal,
  nullable,
  object,
  record,
  string,
  type Infer,
  type Schema,
} from './schema.js';
import { PART_NAME } from './sink.js';

export const IMAGE_FORMAT = 'ferry-image';
export const IMAGE_VERSION = 9;

export const partRecord = object({
  size: integer(0, Number.MAX_SAFE_INTEGER),
  checksum: string({
    pattern: CHECKSUM,
    description: 'xxh3t: XXH3-64 of the XXH3-64s of each 4 MiB (xxh3: XXH3-64 in version 4, xxh64 before)',
  }),
});

export const hostRecord = object({
  kernel: string({ max: 256, description: 'uname -r of the host the image was made on' }),
  hostname: string({ max: 256 }),
  xfeatures: hex64,
});

const IMAGE_PART = /^[a-z][a-z0-9-]*\.img$/;

/**
 * The parts holding a process's pages in an image: the dumped process's are pages.img and
 * pagemap.img, those of a descendant (`pid`, as dumped) pages-p<pid>.img and pagemap-p<pid>.img.
 */
export function pageParts(pid?: number): { pages: string; index: string } {
  const suffix = pid === undefined ? '' : `-p${pid}`;
  return { pages: `pages${suffix}.img`, index: `pagemap${suffix}.img` };
}

/** An earlier page layer inside the image: its page data and its index (docs/IMAGE.md). */
export const layerRecord = object({
  pages: string({ pattern: IMAGE_PART }),
  index: string({ pattern: IMAGE_PART }),
});

/** The image an incremental dump builds on, and its manifest's checksum. */
export const parentRecord = object({
  path: string({ max: 4096, description: 'the parent image directory, relative to this one' }),
  checksum: string({ pattern: CHECKSUM }),
});

export type LayerRecord = Infer<typeof layerRecord>;
export type ParentRecord = Infer<typeof parentRecord>;

/** Processes an image of a tree may hold. */
const MAX_PROCESSES = 1 << 15;

export function manifestSchema<S, T>(state: Schema<S>, tree: Schema<T>) {
  return object({
    format: literal(IMAGE_FORMAT),
    version: literal(IMAGE_VERSION),
    ferry: string({ max: 64 }),
    created: string({ max: 64 }),
    host: hostRecord,
    parts: record(PART_NAME, partRecord, 1 << 20),
    layers: array(layerRecord, { max: 1024 }),
    parent: nullable(parentRecord),
    /** The nftables table (inet) holding the packets of its TCP connections until the restore. */
    networkLock: nullable(string({ pattern: /^ferry-lock-[0-9a-f]+$/ })),
    state,
    tree,
    children: array(state, { max: MAX_PROCESSES }),
    checksum: string({
      pattern: CHECKSUM,
      description:
        'XXH3-64 (xxh64 before version 4) of this manifest without its checksum, as ferry writes it',
    }),
  });
}

/** Add the checksum to a manifest's content: the text to write, and that checksum. */
export function sealManifest(content: Record<string, unknown>): { text: string; checksum: string } {
  const checksum = hashBytes(Buffer.from(serialize(content)));
  return { text: serialize({ ...content, checksum }), checksum };
}

/**
 * The text sealManifest() hashed, cut from `text` as it wrote it (the checksum last), or undefined
 * if `text` does not end that way.
 */
function sealedContent(text: string, checksum: string): string | undefined {
  const tail = `,\n "checksum": ${JSON.stringify(checksum)}\n}\n`;
  return text.endsWith(tail) ? `${text.slice(0, -tail.length)}\n}\n` : undefined;
}

/**
 * Parse a manifest: the format and version first (a newer image is refused as such), then the
 * checksum (any edit shows), then the schema. `upgrade` turns the content of an image of an older
 * version into this version's.
 */
export function openManifest<M>(
  text: string,
  schema: Schema<M>,
  location: string,
  upgrade: (old: Record<string, unknown>, version: number) => Record<string, unknown> = (old) => old,
): M {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new FerryError(
      'FERRY_IMAGE_INVALID',
      `${location}/manifest.json is not JSON: the image is damaged`,
    );
  }
  if (
    typeof value !== 'object' ||
    value === null ||
    (value as { format?: unknown }).format !== IMAGE_FORMAT
  ) {
    throw new FerryError('FERRY_IMAGE_INVALID', `${location} is not a ferry image`);
  }
  const { checksum, ...content } = value as { version?: unknown; checksum?: unknown };
  const version = content.version;
  if (typeof version === 'number' && version > IMAGE_VERSION) {
    throw new FerryError(
      'FERRY_IMAGE_INCOMPATIBLE',
      `${location} is an image of format version ${version}; this ferry reads version ${IMAGE_VERSION}: upgrade ferry`,
    );
  }
  const algorithm = (typeof checksum === 'string' ? algorithmOf(checksum) : undefined) ?? 'xxh3';
  const sums = (bytes: string): boolean => hashBytes(Buffer.from(bytes), algorithm) === checksum;
  const sealed = typeof checksum === 'string' ? sealedContent(text, checksum) : undefined;
  // The text as read first (serializing the content again took 1-2 ms of a restore's start).
  if (!(sealed !== undefined && sums(sealed)) && !sums(serialize(content))) {
    throw new FerryError(
      'FERRY_IMAGE_CORRUPT',
      `${location}/manifest.json does not match its checksum: it was edited or damaged`,
    );
  }
  const older = typeof version === 'number' && version < IMAGE_VERSION;
  const current = older
    ? { ...upgrade(value as Record<string, unknown>, version), version: IMAGE_VERSION }
    : value;
  return schema.check(current, 'manifest');
}
