// The migration stream (docs/PROTOCOL.md): the source sends an image as frames, each naming the part
// it adds bytes to, then the manifest; after the target has restored the process, one more frame
// says whether it runs (commit) or goes (abort). The target answers with one JSON event per line.
import { FerryError } from '../errors.js';
import { serialize } from '../image/json.js';
import { layerRecord } from '../image/manifest.js';
import { array, hex64, integer, object, oneOf, string, type Infer } from '../image/schema.js';
import { PART_NAME, type Placement } from '../image/sink.js';
import { encodeIovecs } from '../sys/process-vm.js';
import { VMA_KINDS } from '../vma/vma.js';

export const FRAME = {
  PART: 1,
  MANIFEST: 2,
  COMMIT: 3,
  ABORT: 4,
  LAYER: 5,
  SEAL: 6,
  /** Post-copy, after the commit: the process's bytes at an address (u64 LE), then the bytes. */
  PAGES: 7,
  /** Post-copy: every page is sent. */
  PAGES_END: 8,
  /**
   * Hybrid, first after the commit: the pages of the pre-copy rounds that still hold, as (start, end)
   * pairs of u64 LE; the target serves those from the rounds' layers.
   */
  KEEP: 9,
  /**
   * Before a pre-copy round's pages, or the frozen copy's (not post-copy's): its layer and the VMAs
   * it copies (a LAYER notice's payload); the target may make room for the pages in the process it
   * restores.
   */
  ROUND: 10,
  /**
   * Where the next bytes of a pages part a ROUND began (named) go, as (address, length) pairs of
   * u64 LE, in the order of the bytes.
   */
  PLACE: 11,
} as const;
export type FrameType = (typeof FRAME)[keyof typeof FRAME];

/** type u8, reserved u8 (0), name length u16 LE, payload length u32 LE. */
const HEADER = 8;
/** The largest payload a frame may carry. */
export const MAX_PAYLOAD = 64 << 20;
/** The largest payload of a frame other than PART, which is buffered whole (PART payloads are not). */
export const MAX_CONTROL_PAYLOAD = 16 << 20;
const MAX_NAME = 256;

/**
 * A LAYER frame's payload: a pre-copy round's layer is complete (its parts sent in full), and the
 * VMAs the process had during that round, so that the target can start restoring it.
 */
const layerNotice = object({
  pid: integer(1, 2 ** 22),
  layer: layerRecord,
  vmas: array(
    object({
      start: hex64,
      end: hex64,
      perms: string({ pattern: /^[r-][w-][x-][ps]$/ }),
      kind: oneOf(VMA_KINDS),
      name: string({ max: 4096 }),
    }),
    { max: 1 << 20 },
  ),
});
export type LayerNotice = Infer<typeof layerNotice>;

export const encodeLayerNotice = (notice: LayerNotice): Buffer => Buffer.from(serialize(notice));

export function decodeLayerNotice(payload: Buffer): LayerNotice {
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch {
    throw corrupt('a LAYER frame that is not JSON');
  }
  return layerNotice.check(value, 'layer');
}

export interface Frame {
  type: FrameType;
  /** The part a PART frame adds to, or a PLACE frame places; empty for the others. */
  name: string;
  payload: Buffer;
}

function corrupt(message: string): FerryError {
  return new FerryError('FERRY_IMAGE_CORRUPT', `migration stream: ${message}`);
}

/** The header and name of a frame; its payload follows as it is (not copied). */
export function frameHeader(type: FrameType, name: string, payloadLength: number): Buffer {
  if (payloadLength > MAX_PAYLOAD) throw new FerryError('FERRY_INTERNAL', `frame of ${payloadLength} bytes`);
  const nameBytes = Buffer.from(name, 'utf8');
  const header = Buffer.alloc(HEADER + nameBytes.length);
  header.writeUInt8(type, 0);
  header.writeUInt16LE(nameBytes.length, 2);
  header.writeUInt32LE(payloadLength, 4);
  nameBytes.copy(header, HEADER);
  return header;
}

/** Checked as soon as the header is in, before anything is buffered for the frame. */
function checkHeader(type: number, nameLength: number, length: number): FrameType {
  if (!Object.values(FRAME).includes(type as FrameType)) throw corrupt(`unknown frame type ${type}`);
  const max = type === FRAME.PART ? MAX_PAYLOAD : MAX_CONTROL_PAYLOAD;
  if (length > max) throw corrupt(`a frame of type ${type} of ${length} bytes is larger than ${max}`);
  if (nameLength > MAX_NAME) throw corrupt(`a part name of ${nameLength} bytes`);
  return type as FrameType;
}

/** Frames that name a part. */
const NAMED: readonly FrameType[] = [FRAME.PART, FRAME.PLACE];

function checkName(type: FrameType, name: string): void {
  if (NAMED.includes(type) && !PART_NAME.test(name)) throw corrupt(`bad part name ${JSON.stringify(name)}`);
  if (!NAMED.includes(type) && name !== '') throw corrupt(`frame type ${type} carries a name`);
}

/** A PLACE frame's payload: where the bytes go, in their order (struct iovec's layout). */
export const encodePlacement = (runs: readonly Placement[]): Buffer => encodeIovecs(runs);

/** The u64 LE pairs a KEEP or PLACE payload holds (a whole number of them, or none). */
export function readPairs(payload: Buffer): [bigint, bigint][] {
  return Array.from({ length: payload.length / 16 }, (_, i) => [
    payload.readBigUInt64LE(i * 16),
    payload.readBigUInt64LE(i * 16 + 8),
  ]);
}

export function decodePlacement(payload: Buffer): Placement[] {
  if (payload.length % 16 !== 0) throw corrupt(`a PLACE frame of ${payload.length} bytes`);
  return readPairs(payload).map(([addr, len]) => {
    if (addr % 4096n !== 0n || len === 0n || len % 4096n !== 0n || len > BigInt(MAX_PAYLOAD))
      throw corrupt(`a PLACE frame with a run of ${len} bytes at 0x${addr.toString(16)}`);
    return { addr, len: Number(len) };
  });
}

/**
 * Parse frames from a byte stream; the stream must end exactly after a frame. A PART frame's payload
 * comes as it arrives, in pieces, each a frame of its own for the same part (its bytes go straight
 * on, never buffered whole); the other frames come whole.
 */
export async function* readFrames(input: AsyncIterable<Buffer> | Iterable<Buffer>): AsyncGenerator<Frame> {
  const chunks: Buffer[] = [];
  let buffered = 0;
  /** Take `n` bytes from the front of what is buffered (n <= buffered). */
  const take = (n: number): Buffer => {
    if (n === 0) return Buffer.alloc(0);
    const first = chunks[0]!;
    if (first.length >= n) {
      chunks[0] = first.subarray(n);
      if (chunks[0].length === 0) chunks.shift();
      buffered -= n;
      return first.subarray(0, n);
    }
    // Only the frame's own bytes are copied, however much is buffered behind them.
    const out = Buffer.allocUnsafe(n);
    for (let at = 0; at < n;) {
      const c = chunks[0]!;
      const k = Math.min(c.length, n - at);
      c.copy(out, at, 0, k);
      at += k;
      if (k === c.length) chunks.shift();
      else chunks[0] = c.subarray(k);
    }
    buffered -= n;
    return out;
  };
  /** The frame being read: its header, its name once read, and the payload bytes still to come. */
  let frame: { type: FrameType; nameLength: number; name?: string; left: number } | undefined;
  for await (const chunk of input) {
    chunks.push(chunk);
    buffered += chunk.length;
    for (;;) {
      if (!frame) {
        if (buffered < HEADER) break;
        const h = take(HEADER);
        if (h[1] !== 0) throw corrupt('reserved header byte is not zero');
        const [nameLength, length] = [h.readUInt16LE(2), h.readUInt32LE(4)];
        frame = { type: checkHeader(h.readUInt8(0), nameLength, length), nameLength, left: length };
        continue;
      }
      if (frame.name === undefined) {
        if (buffered < frame.nameLength) break;
        frame.name = take(frame.nameLength).toString('utf8');
        checkName(frame.type, frame.name);
        if (frame.type === FRAME.PART && frame.left === 0) {
          yield { type: frame.type, name: frame.name, payload: Buffer.alloc(0) };
          frame = undefined;
        }
        continue;
      }
      if (frame.type === FRAME.PART) {
        if (buffered === 0) break;
        const piece = take(Math.min(frame.left, chunks[0]!.length));
        frame.left -= piece.length;
        const { type, name } = frame;
        if (frame.left === 0) frame = undefined;
        yield { type, name, payload: piece };
        continue;
      }
      if (buffered < frame.left) break;
      const payload = take(frame.left);
      const { type, name } = frame;
      frame = undefined;
      yield { type, name, payload };
    }
  }
  if (frame || buffered > 0) throw corrupt('the stream ended inside a frame');
}

/**
 * A migration as the target sees it (GET /v1/migrations/:id). `copying`: post-copy, the process
 * runs here while its pages still come.
 */
export type MigrationState = 'receiving' | 'restoring' | 'held' | 'copying' | 'running' | 'aborted';

export interface Migration {
  id: string;
  state: MigrationState;
  /** Image bytes received. */
  bytes: number;
  started: number;
  pid?: number;
  /** Why it was aborted. */
  reason?: string;
}

/** What the target tells the source, one JSON object per line. */
export type TargetEvent =
  | { event: 'received'; bytes: number }
  | { event: 'layered'; layer: string; prefilled: boolean }
  | { event: 'restored'; pid: number; restoreMs: number; stages?: Record<string, number> }
  | { event: 'running'; pid: number }
  /** Post-copy: the process here faulted on pages of [addr, addr + len) (addr hex) not sent yet. */
  | { event: 'fault'; addr: string; len: number }
  /** Post-copy: every page is in; the source may let its process go. */
  | { event: 'complete'; pages: number }
  | { event: 'aborted'; reason: string }
  | { event: 'error'; code: string; message: string };

/** Parse the target's event lines. */
export async function* readEvents(
  input: AsyncIterable<Buffer> | Iterable<Buffer>,
): AsyncGenerator<TargetEvent> {
  let rest = '';
  for await (const chunk of input) {
    rest += chunk.toString('utf8');
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const line = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      if (line.trim() === '') continue;
      let event: unknown;
      try {
        event = JSON.parse(line);
      } catch {
        throw new FerryError(
          'FERRY_CONNECTION',
          `the target sent a line that is not JSON: ${line.slice(0, 80)}`,
        );
      }
      if (
        typeof event !== 'object' ||
        event === null ||
        typeof (event as { event?: unknown }).event !== 'string'
      )
        throw new FerryError(
          'FERRY_CONNECTION',
          `the target sent an event without a name: ${line.slice(0, 80)}`,
        );
      yield event as TargetEvent;
    }
  }
}

export const eventLine = (event: TargetEvent): string => `${JSON.stringify(event)}\n`;
