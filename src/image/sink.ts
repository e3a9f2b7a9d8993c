// Where an image goes and where it comes from. A directory is one backend; a network stream to
// another host (migration) is another, behind the same two interfaces.
import {
  closeSync,
  existsSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  write,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { FerryError } from '../errors.js';
import { parseStat } from '../proc/stat.js';
import { isErrno, SysError } from '../sys/errno.js';
import { fallocate } from '../sys/fcntl.js';
import { createHasher } from './hash.js';
import type { LayerRecord } from './manifest.js';
import type { VmaKind } from '../vma/vma.js';

/** A VMA as a round saw it. */
export interface LayerVma {
  start: bigint;
  end: bigint;
  perms: string;
  kind: VmaKind;
  name: string;
}

/** The fields of `vmas` a round's notice carries. */
export const layerVmas = (vmas: readonly LayerVma[]): LayerVma[] =>
  vmas.map(({ start, end, perms, kind, name }) => ({ start, end, perms, kind, name }));

export interface PartSummary {
  size: number;
  checksum: string;
}

/** Where bytes of a pages part belong in the process: `len` bytes at `addr`. */
export interface Placement {
  addr: bigint;
  len: number;
}

/** One part being written. */
export interface PartWriter {
  /**
   * Append `data`. It is hashed at once but may be written later: leave it unchanged until the
   * returned promise settles.
   */
  write(data: Uint8Array): Promise<void>;
  /** Set aside room for `bytes` more bytes now, so that a full disk shows before any work is done. */
  reserve(bytes: number): void;
  /**
   * A pages part: the next bytes written are the pages of `runs`, in order (a migration's target may
   * put them into the process it restores as they come).
   */
  place?(runs: readonly Placement[]): void;
  /** Wait for every write; the part's size and checksum. */
  close(): Promise<PartSummary>;
}

/** A part written to a file, which may leave holes where bytes are kept elsewhere. */
export interface FilePartWriter extends PartWriter {
  /** The file. */
  readonly path: string;
  /** Hash `data` as the part's next bytes, but leave a hole in the file where they would go. */
  skip(data: Uint8Array): void;
}

export interface ImageSink {
  /** Where the image goes, for messages. */
  readonly location: string;
  openPart(name: string): PartWriter;
  /**
   * Make the image complete with its sealed manifest. When this resolves the image may replace the
   * process (a dump kills it next); when it throws, the process must run on (but for a migration
   * left in doubt). `fence` is called just before the step past which the process must not run
   * here again should ferry die (a migration's COMMIT): it puts up Tracee.fence().
   */
  commit(manifest: string, fence?: () => void): Promise<void>;
  /**
   * A pre-copy round, or the frozen copy of a migration, begins: its pages go into `layer`; `vmas`
   * are the process's VMAs as it starts. A target may make room for the pages in the process it
   * restores.
   */
  layerStart?(pid: number, layer: LayerRecord, vmas: readonly LayerVma[]): Promise<void>;
  /**
   * A pre-copy round's layer is written in full (its parts closed); `vmas` are the process's VMAs
   * during the round. A target may start restoring from it: resolves true when it did.
   */
  layerDone?(pid: number, layer: LayerRecord, vmas: readonly LayerVma[]): Promise<boolean>;
  /** Work left once the process runs on or is gone (nothing here may need it frozen). */
  settle(): Promise<void>;
  /** Forget everything written so far. */
  abort(): Promise<void>;
}

export interface PartReader {
  /**
   * The next `length` bytes, fewer only at the end of the part; read into the start of `into` when
   * given (which must hold `length` bytes), else into a new buffer.
   */
  read(length: number, into?: Buffer): Buffer;
  close(): void;
}

export interface ImageSource {
  readonly location: string;
  readManifest(): string;
  partSize(name: string): number;
  openPart(name: string): PartReader;
  /** The file holding the part, which any process on this host may open. */
  partFile(name: string): string;
}

/** Names of image parts: top-level files and saved file contents under files/. */
export const PART_NAME = /^(?:[a-z][a-z0-9-]*\.img|files\/[a-z0-9-]+)$/;
export const MANIFEST = 'manifest.json';
/** Names of ferry's own hidden entries in an image directory: parts being written, replaced images. */
const HIDDEN = '.ferry-';

function writeError(path: string, err: unknown): FerryError {
  if (err instanceof FerryError && err.code === 'FERRY_IMAGE_WRITE') return err;
  const code =
    err instanceof SysError ? err.errno : err instanceof Error && 'code' in err ? String(err.code) : '';
  const why =
    code === 'ENOSPC' ? 'no space left on device' : code === 'EACCES' ? 'permission denied' : String(err);
  return new FerryError('FERRY_IMAGE_WRITE', `cannot write ${path}: ${why}`, { cause: err });
}

/** write(2) all of `data` at `position`, in the thread pool. */
async function writeAt(fd: number, data: Uint8Array, position: number): Promise<void> {
  for (let off = 0; off < data.length;) {
    const { bytesWritten } = await new Promise<{ bytesWritten: number }>((resolve, reject) =>
      write(fd, data, off, data.length - off, position + off, (err, bytesWritten) =>
        err ? reject(err) : resolve({ bytesWritten }),
      ),
    );
    off += bytesWritten;
  }
}

/**
 * Writes an image into a directory: parts go to a hidden partial directory inside it and move into
 * place on commit, manifest last, so a crash or a full disk never leaves a half-written image.
 */
export class DirSink implements ImageSink {
  /** Where the parts are written until the commit moves them into place. */
  readonly partial: string;
  private readonly replaced: string;
  private readonly written: string[] = [];
  /** Parts still being written: each closes its descriptor and unmaps its room (abort()). */
  private readonly open = new Set<() => void>();
  /** Writes in flight, awaited by abort(). */
  private readonly inFlight = new Set<Promise<void>>();
  private done = false;
  /** The first directory this sink made to hold the image, if it made any: an abort removes it. */
  private readonly made: string | undefined;

  /** `sync`: fsync every part and the directory before the image counts as written. */
  constructor(
    readonly location: string,
    private readonly sync = false,
  ) {
    try {
      // An image holds a process's memory, secrets included: its directory is the owner's alone.
      this.made = mkdirSync(location, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw writeError(location, err);
    }
    removeStalePartials(location);
    const present = readdirSync(location).filter((f) => !f.startsWith(HIDDEN));
    if (present.length > 0 && !present.includes(MANIFEST)) {
      this.removeMade();
      throw new FerryError(
        'FERRY_USAGE',
        `${location} is not empty and holds no ferry image: choose an empty directory`,
      );
    }
    const tag = `${process.pid}-${ownStartTime()}-${randomBytes(4).toString('hex')}`;
    this.partial = join(location, `${HIDDEN}partial-${tag}`);
    this.replaced = join(location, `${HIDDEN}replaced-${tag}`);
    try {
      mkdirSync(this.partial);
    } catch (err) {
      throw writeError(this.partial, err);
    }
  }

  /** Where part `name` is while the image is being written (it moves into place on commit). */
  partPath(name: string): string {
    return join(this.partial, name);
  }

  openPart(name: string): FilePartWriter {
    if (!PART_NAME.test(name)) throw new FerryError('FERRY_INTERNAL', `bad image part name ${name}`);
    this.written.push(name);
    return this.createFile(name);
  }

  private createFile(name: string): FilePartWriter {
    const path = join(this.partial, name);
    let fd: number;
    try {
      mkdirSync(dirname(path), { recursive: true });
      fd = openSync(path, 'w+', 0o600);
    } catch (err) {
      throw writeError(path, err);
    }
    const hasher = createHasher();
    const writes: Promise<void>[] = [];
    let size = 0;
    /** Bytes of the file allocated by reserve(). */
    let allocated = 0;
    /** Whether skip() left a hole (maybe at the end, which only a truncate makes part of the file). */
    let holes = false;
    const release = (): void => closeSync(fd);
    this.open.add(release);
    const allocate = (end: number): void => {
      if (end <= allocated) return;
      try {
        fallocate(fd, allocated, end - allocated);
      } catch (err) {
        // A file system without fallocate: a full disk shows as a failed write instead.
        if (!isErrno(err, 'EOPNOTSUPP')) throw err;
        ftruncateSync(fd, end);
      }
      allocated = end;
    };
    return {
      path,
      skip: (data) => {
        hasher.update(data);
        size += data.length;
        holes = true;
      },
      write: (data) => {
        hasher.update(data);
        const done = writeAt(fd, data, size).catch((err: unknown) => {
          throw writeError(path, err);
        });
        size += data.length;
        writes.push(done);
        this.inFlight.add(done);
        void done.then(
          () => this.inFlight.delete(done),
          () => this.inFlight.delete(done),
        );
        return done;
      },
      reserve: (bytes) => {
        try {
          allocate(size + bytes);
        } catch (err) {
          throw writeError(path, err);
        }
      },
      close: async () => {
        try {
          await Promise.all(writes);
          // Room allocated but not used goes.
          if (allocated > size || holes) ftruncateSync(fd, size);
          if (this.sync) fsyncSync(fd);
        } catch (err) {
          throw writeError(path, err);
        } finally {
          this.open.delete(release);
          release();
        }
        return { size, checksum: hasher.digest() };
      },
    };
  }

  async commit(manifest: string): Promise<void> {
    const part = this.createFile(MANIFEST);
    await part.write(Buffer.from(manifest));
    await part.close();
    try {
      // An older image in the directory is replaced: its files move aside first (deleting large
      // files takes long: discardReplaced() does it later), the new manifest comes last.
      mkdirSync(this.replaced);
      for (const f of readdirSync(this.location)) {
        if (!f.startsWith(HIDDEN)) renameSync(join(this.location, f), join(this.replaced, f));
      }
      for (const name of [...this.written, MANIFEST]) {
        mkdirSync(dirname(join(this.location, name)), { recursive: true });
        renameSync(join(this.partial, name), join(this.location, name));
      }
      rmSync(this.partial, { recursive: true, force: true });
      if (this.sync) {
        const dirFd = openSync(this.location, 'r');
        try {
          fsyncSync(dirFd);
        } finally {
          closeSync(dirFd);
        }
      }
    } catch (err) {
      throw writeError(this.location, err);
    }
    this.done = true;
  }

  /** Delete the image the commit replaced (and any an interrupted dump left aside). */
  async settle(): Promise<void> {
    const replaced = readdirSync(this.location).filter((f) => f.startsWith(`${HIDDEN}replaced-`));
    await Promise.all(replaced.map((f) => rm(join(this.location, f), { recursive: true, force: true })));
  }

  /** Forget everything written: the directory is left as it was found. */
  async abort(): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
    for (const release of this.open) release();
    this.open.clear();
    if (!this.done) {
      rmSync(this.partial, { recursive: true, force: true });
      this.removeMade();
    }
    this.done = true;
  }

  /** Remove the directories this sink made, from the image's up, where they are empty. */
  private removeMade(): void {
    if (this.made === undefined) return;
    for (let dir = resolve(this.location); ; dir = dirname(dir)) {
      try {
        rmdirSync(dir);
      } catch {
        return; // not empty (or gone): what is above stays too
      }
      if (dir === resolve(this.made)) return;
    }
  }
}

/** This process's start time (/proc/self/stat), which tells its partials from a reused PID's. */
function ownStartTime(): string {
  return String(parseStat(readFileSync('/proc/self/stat', 'latin1')).startTime);
}

/**
 * Remove the partial images that dumps which died (SIGKILL, a crash) left in `location`: those whose
 * writer (the PID and start time in their name) is gone. A dump under way there keeps its own.
 */
function removeStalePartials(location: string): void {
  for (const name of readdirSync(location)) {
    const m = /^\.ferry-partial-(\d+)-(\d+)-[0-9a-f]+$/.exec(name);
    if (!m) continue;
    let alive = false;
    try {
      alive = String(parseStat(readFileSync(`/proc/${m[1]}/stat`, 'latin1')).startTime) === m[2];
    } catch {
      // gone
    }
    if (!alive) rmSync(join(location, name), { recursive: true, force: true });
  }
}

function readError(path: string, err: unknown): FerryError {
  const code = err instanceof Error && 'code' in err ? String(err.code) : '';
  if (code === 'ENOENT') return new FerryError('FERRY_IMAGE_CORRUPT', `${path} is missing`, { cause: err });
  return new FerryError('FERRY_IMAGE_CORRUPT', `cannot read ${path}: ${String(err)}`, { cause: err });
}

/** Reads an image from a directory. */
export class DirSource implements ImageSource {
  constructor(readonly location: string) {}

  readManifest(): string {
    const path = join(this.location, MANIFEST);
    if (!existsSync(path)) {
      const what = existsSync(this.location) ? 'holds no ferry image (no manifest.json)' : 'does not exist';
      throw new FerryError('FERRY_IMAGE_INVALID', `${this.location} ${what}`);
    }
    const reader = this.openPart(MANIFEST);
    try {
      return reader.read(this.partSize(MANIFEST)).toString('utf8');
    } finally {
      reader.close();
    }
  }

  partSize(name: string): number {
    const path = join(this.location, name);
    try {
      return statSync(path).size;
    } catch (err) {
      throw readError(path, err);
    }
  }

  partFile(name: string): string {
    return resolve(this.location, name);
  }

  openPart(name: string): PartReader {
    const path = join(this.location, name);
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      throw readError(path, err);
    }
    return {
      read(length, into) {
        const buf = into ?? Buffer.allocUnsafe(length);
        let got = 0;
        try {
          while (got < length) {
            const n = readSync(fd, buf, got, length - got, null);
            if (n === 0) break;
            got += n;
          }
        } catch (err) {
          throw readError(path, err);
        }
        return got === buf.length ? buf : buf.subarray(0, got);
      },
      close: () => closeSync(fd),
    };
  }
}
