// The migration stream's frames: what goes in comes out, split anywhere; hostile input is refused.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { hashBytes, initHashing } from '../../src/image/hash.js';
import { StreamSink } from '../../src/migrate/stream-sink.js';
import { FRAME, frameHeader, readEvents, readFrames, type Frame } from '../../src/migrate/wire.js';

function* chunks(bytes: Buffer, size: number): Generator<Buffer> {
  for (let off = 0; off < bytes.length; off += size) yield bytes.subarray(off, off + size);
}

/** The frames, a PART frame's pieces joined again. */
async function frames(bytes: Buffer, size: number): Promise<Frame[]> {
  const out: Frame[] = [];
  let piece = false; // the last frame out is a PART frame still coming in pieces
  for await (const f of readFrames(chunks(bytes, size))) {
    const last = out.at(-1);
    if (piece && last && f.type === FRAME.PART && last.name === f.name)
      last.payload = Buffer.concat([last.payload, f.payload]);
    else out.push({ ...f, payload: Buffer.from(f.payload) });
    piece = f.type === FRAME.PART;
  }
  return out;
}

const frame = (type: (typeof FRAME)[keyof typeof FRAME], name: string, payload: Buffer): Buffer =>
  Buffer.concat([frameHeader(type, name, payload.length), payload]);

test('frames come back whole however the stream is cut', async () => {
  const stream = Buffer.concat([
    frame(FRAME.PART, 'pages.img', Buffer.alloc(10_000, 7)),
    frame(FRAME.PART, 'files/ghost-1', Buffer.from('abc')),
    frame(FRAME.MANIFEST, '', Buffer.from('{}')),
    frame(FRAME.COMMIT, '', Buffer.alloc(0)),
  ]);
  for (const size of [1, 7, 4096, stream.length]) {
    const got = await frames(stream, size);
    assert.deepEqual(
      got.map((f) => [f.type, f.name, f.payload.length]),
      [
        [FRAME.PART, 'pages.img', 10_000],
        [FRAME.PART, 'files/ghost-1', 3],
        [FRAME.MANIFEST, '', 2],
        [FRAME.COMMIT, '', 0],
      ],
    );
    assert.ok(got[0]!.payload.equals(Buffer.alloc(10_000, 7)));
  }
});

test("a PART frame's bytes come out as they arrive, never held until the frame is whole", async () => {
  const big = frame(FRAME.PART, 'pages.img', Buffer.alloc(1 << 20, 3));
  const input = new PassThrough();
  const reader = readFrames(input)[Symbol.asyncIterator]();
  input.write(big.subarray(0, 100_000));
  const first = await reader.next();
  assert.equal(first.done, false);
  assert.equal(first.value.name, 'pages.img');
  assert.ok(first.value.payload.length > 0 && first.value.payload.length < 100_000, 'a piece, early');
  input.end(big.subarray(100_000));
  let total = first.value.payload.length;
  for (let r = await reader.next(); !r.done; r = await reader.next()) total += r.value.payload.length;
  assert.equal(total, 1 << 20);
});

test('hostile or damaged streams are refused', async () => {
  const good = frame(FRAME.PART, 'pages.img', Buffer.alloc(16));
  const cases: [string, Buffer, RegExp][] = [
    ['unknown type', Buffer.from([42, 0, 0, 0, 0, 0, 0, 0]), /unknown frame type 42/],
    ['reserved byte', Buffer.from([1, 1, 0, 0, 0, 0, 0, 0]), /reserved header byte/],
    ['path escape', frame(FRAME.PART, '../etc/passwd', Buffer.alloc(1)), /bad part name/],
    ['named manifest', frame(FRAME.MANIFEST, 'x.img', Buffer.alloc(1)), /carries a name/],
    ['truncated', good.subarray(0, good.length - 1), /ended inside a frame/],
  ];
  const huge = Buffer.from([1, 0, 9, 0, 0, 0, 0, 0x10, ...Buffer.from('pages.img')]);
  cases.push(['huge payload', huge, /larger than/]);
  // A manifest is held whole until it is in: a smaller bound than for page data.
  cases.push(['huge manifest', Buffer.from([2, 0, 0, 0, 0, 0, 0, 0x02]), /larger than 16777216/]);
  for (const [what, bytes, message] of cases) {
    await assert.rejects(frames(bytes, 3), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'FERRY_IMAGE_CORRUPT', what);
      assert.match(err.message, message, what);
      return true;
    });
  }
});

test('events are read line by line; a line that is not an event is refused', async () => {
  const text = '{"event":"restored","pid":5,"restoreMs":1}\n\n{"event":"running","pid":5}\n';
  const got = [];
  for await (const e of readEvents(chunks(Buffer.from(text), 5))) got.push(e.event);
  assert.deepEqual(got, ['restored', 'running']);
  await assert.rejects(async () => {
    for await (const e of readEvents(chunks(Buffer.from('HTTP/1.1 garbage\n'), 4))) void e;
  }, /not JSON/);
});

test('a streamed part with no bytes still reaches the target, as one empty frame', async () => {
  await initHashing();
  const out = new PassThrough();
  const sent: Buffer[] = [];
  out.on('data', (d: Buffer) => sent.push(d));
  let hangUp = (): void => {};
  const silence = new Promise<void>((resolve) => (hangUp = resolve));
  // A target that says nothing until the test is over.
  const events = (async function* () {
    await silence;
    yield* [];
  })();
  const sink = new StreamSink('target', out, events, {
    timeoutMs: 1000,
    commitAgain: () => Promise.resolve('aborted'),
    sealKey: Buffer.alloc(32),
  });
  const empty = sink.openPart('pages.img');
  const full = sink.openPart('pagemap.img');
  await full.write(Buffer.from('index'));
  assert.deepEqual(await empty.close(), { size: 0, checksum: hashBytes(Buffer.alloc(0), 'xxh3t') });
  await full.close();
  out.end();
  hangUp();
  const got = await frames(Buffer.concat(sent), 4096);
  assert.deepEqual(
    got.map((f) => [f.type, f.name, f.payload.length]),
    [
      [FRAME.PART, 'pagemap.img', 5],
      [FRAME.PART, 'pages.img', 0],
    ],
  );
});
