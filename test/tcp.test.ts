// Established TCP connections through dump and restore (--tcp-established, TCP_REPAIR): a python3
// server with a connection to this test process, bytes queued both ways at dump time. The client
// end never notices: after the restore every byte arrives once, in order, and the server reads
// what was waiting for it. While the killed server is down, the connection's packets must wait: a
// segment reaching no socket meanwhile (the peer's delayed acknowledgment of a window probe the
// frozen socket sent) would be answered with a reset. ferry's own network lock (an nftables table)
// drops them; the test checks it is there while the server is down, and gone once it is back.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { before, test } from 'node:test';
import { cleanupAfterAll, workDirs } from './helpers/cleanup.js';
import { cliOk, restoreCli, runCli } from './helpers/cli.js';
import { fileContent } from './helpers/compute.js';
import { PYTHON } from './helpers/paths.js';
import { startLogged, traceState } from './helpers/processes.js';
import { becomeSubreaper } from './helpers/reaper.js';

const cleanup = cleanupAfterAll();
const { dir } = workDirs('ferry-tcp', cleanup);
/**
 * One port for every test: each server's connection ends in TIME_WAIT on it, which must not keep
 * the next server (SO_REUSEADDR) from binding it, restored or not.
 */
const PORT = 16411;

before(() => becomeSubreaper());

/**
 * Accepts one connection, sends as much of an 8 MiB pattern as the socket takes without waiting,
 * then, once <dir>/go exists, reads until "go\n" and answers with what it read.
 */
const SERVER = `
import os, socket, sys, time
os.closerange(3, 65536)
base, port = sys.argv[1], int(sys.argv[2])
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(('127.0.0.1', port))
listener.listen(1)
print('LISTENING', flush=True)
conn, _ = listener.accept()
listener.close()
conn.setblocking(False)
payload = bytes(i % 251 for i in range(8 << 20))
sent = 0
try:
    while sent < len(payload):
        sent += conn.send(payload[sent:])
except BlockingIOError:
    pass
print('SENT', sent, flush=True)
while not os.path.exists(base + '/go'):
    time.sleep(0.01)
got = b''
while not got.endswith(b'go\\n'):
    try:
        got += conn.recv(65536)
    except BlockingIOError:
        time.sleep(0.01)
conn.setblocking(True)
conn.sendall(b'READ ' + got)
print('DONE', flush=True)
`;

/** A connected client that does not read until told to: all it is sent waits in the kernel. */
async function client(): Promise<{ socket: Socket; received: () => Buffer }> {
  const socket = connect(PORT, '127.0.0.1');
  cleanup(() => void socket.destroy());
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.pause();
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  return { socket, received: () => Buffer.concat(chunks) };
}

async function serverWithQueues(): Promise<{
  pid: number;
  out: string;
  base: string;
  sent: number;
  c: Awaited<ReturnType<typeof client>>;
}> {
  const base = dir();
  const out = `${base}/out`;
  const pid = await startLogged(out, PYTHON, ['-c', SERVER, base, String(PORT)], /^LISTENING\n/, cleanup);
  const c = await client();
  const sent = Number(/^SENT (\d+)$/m.exec(await fileContent(out, /^SENT \d+\n/m))![1]);
  c.socket.write('waiting before the dump;');
  await new Promise((r) => setTimeout(r, 100)); // in the server's receive queue, not read
  return { pid, out, base, sent, c };
}

test('an established TCP connection is refused without --tcp-established; the server runs on', async () => {
  const s = await serverWithQueues();
  const r = await runCli(['dump', String(s.pid), '-D', dir()]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /fd \d+ is a TCP connection \(127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+\), and --tcp-established was not given/,
  );
  const after = traceState(s.pid);
  assert.match(after.state, /^[RS]$/, 'running, not stopped');
  assert.equal(after.tracerPid, 0, 'not traced');
  s.c.socket.destroy();
});

for (const leaveRunning of [false, true]) {
  test(`an established TCP connection comes back with the bytes queued both ways${leaveRunning ? ' (--leave-running: the original goes on)' : ''}`, async () => {
    const s = await serverWithQueues();
    const image = dir();
    await cliOk([
      'dump',
      String(s.pid),
      '-D',
      image,
      '--tcp-established',
      ...(leaveRunning ? ['--leave-running'] : []),
    ]);
    const shown = await cliOk(['show', image]);
    const queued = /established: (\d+) bytes queued to send \(\d+ not sent yet\), (\d+) to read/.exec(shown);
    assert.ok(queued, shown);
    assert.ok(Number(queued[1]) > 0, 'the server had bytes queued to send');
    assert.equal(Number(queued[2]), 'waiting before the dump;'.length);
    // Killed, the server is down until its restore: ferry's network lock holds its connection's
    // packets (drops them) until then, and lifts it once the connection is back.
    const { networkLock } = JSON.parse(readFileSync(`${image}/manifest.json`, 'utf8')) as {
      networkLock: string | null;
    };
    const locked = (): boolean => {
      try {
        execFileSync('nft', ['list', 'table', 'inet', networkLock!], { stdio: 'ignore' });
        return true;
      } catch {
        return false;
      }
    };
    if (leaveRunning) assert.equal(networkLock, null, 'the original goes on: nothing to hold');
    else {
      assert.match(networkLock ?? '', /^ferry-lock-[0-9a-f]+$/);
      cleanup(() => void (locked() && execFileSync('nft', ['delete', 'table', 'inet', networkLock!])));
      assert.ok(locked(), 'held while the server is down');
      assert.match(
        await cliOk(['show', image]),
        new RegExp(`network lock: nftables table inet ${networkLock}`),
      );
      await restoreCli(image, cleanup);
      assert.ok(!locked(), 'lifted once it is back');
    }
    // The client reads on; the server, original or restored, is told to read.
    s.c.socket.resume();
    writeFileSync(`${s.base}/go`, '');
    s.c.socket.write('go\n');
    const expected = Buffer.concat([
      Buffer.from(Array.from({ length: s.sent }, (_, i) => i % 251)),
      Buffer.from('READ waiting before the dump;go\n'),
    ]);
    for (
      const until = Date.now() + 20_000;
      s.c.received().length < expected.length;
      await new Promise((r) => setTimeout(r, 20))
    )
      assert.ok(Date.now() < until, `received ${s.c.received().length} of ${expected.length} bytes`);
    assert.ok(s.c.received().equals(expected), 'every byte once, in order');
  });
}
