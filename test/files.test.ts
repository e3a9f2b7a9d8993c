// Descriptors beyond plain files through dump and restore: pipes with their buffered bytes,
// eventfd, epoll and its interest list, descriptors sharing one open file, and listening TCP
// sockets, on a C fixture that checks them itself, on redis-server from Debian's package and on a
// Node.js HTTP server.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import {
  closeSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { request } from 'node:http';
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { cleanupAfterAll, workDirs } from './helpers/cleanup.js';
import { cliOk, restoreCli, runCli } from './helpers/cli.js';
import { fileContent } from './helpers/compute.js';
import { fixture } from './helpers/fixtures.js';
import { CLI, PYTHON } from './helpers/paths.js';
import { startLogged as startProcessLogged, traceState } from './helpers/processes.js';
import { becomeSubreaper, childNamed, childrenOf, killAndReap } from './helpers/reaper.js';
import { checkKeys, freePort, KEYS, loadKeys, REDIS_OPTIONS, redisCli } from './helpers/redis.js';

const cleanup = cleanupAfterAll();
const { dir } = workDirs('ferry-files', cleanup);

before(() => becomeSubreaper());

/** Start `cmd` with its output in a file, which a restored copy goes on writing. */
async function startLogged(
  cmd: string,
  args: string[],
  ready: RegExp,
): Promise<{ pid: number; out: string }> {
  const out = `${dir()}/out`;
  return { pid: await startProcessLogged(out, cmd, args, ready, cleanup), out };
}

test('pipes, eventfd, epoll and shared open files come back as they were', async () => {
  const work = dir();
  const p = await startLogged(fixture('fds'), [work], /^READY\n/);
  const image = dir();
  await cliOk(['dump', String(p.pid), '-D', image]);
  const shown = await cliOk(['show', image]);
  assert.match(shown, /read end of pipe \d+ \(12 bytes buffered\)/);
  assert.match(shown, /read end of pipe \d+ \(204800 bytes buffered\)/);
  assert.match(shown, /eventfd, count 7, semaphore/);
  assert.match(shown, /the open file of fd 1\n/);
  const pid = await restoreCli(image, cleanup);
  process.kill(pid, 'SIGUSR1');
  assert.match(await fileContent(p.out, /^CHECK .*\n/m), /^CHECK ok$/m);
});

const MEMFD = `
import fcntl, os, sys, time
os.closerange(3, 65536)
fd = os.memfd_create('ferry-test', os.MFD_ALLOW_SEALING)
os.write(fd, b'hello memfd')
os.lseek(fd, 6, os.SEEK_SET)
fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
print('READY', flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
print(os.readlink(f'/proc/self/fd/{fd}'), os.read(fd, 100).decode(), fcntl.fcntl(fd, fcntl.F_GET_SEALS), flush=True)
`;

test('a memfd comes back with its name, content, position and seals', async () => {
  const go = `${dir()}/go`;
  const p = await startLogged(PYTHON, ['-c', MEMFD, go], /^READY\n/);
  const image = dir();
  await cliOk(['dump', String(p.pid), '-D', image]);
  assert.match(await cliOk(['show', image]), /memfd ferry-test @6 \(11 bytes saved, seals 0x2\)/);
  await restoreCli(image, cleanup);
  writeFileSync(go, '');
  assert.match(await fileContent(p.out, /^\/memfd.*\n/m), /^\/memfd:ferry-test \(deleted\) memfd 2$/m);
});

test('bc reading a pipe whose writer (echo) has exited: dumped mid-computation, it finishes right', async () => {
  const program = 'scale=2000; 4*a(1)\n';
  const out = `${dir()}/out`;
  // The shell's own words ("Killed", as its bc is) go to a log of their own.
  const sh = await startProcessLogged(
    `${dir()}/log`,
    'sh',
    ['-c', `echo "${program.trim()}" | bc -l > "$0"`, out],
    /^/,
    cleanup,
  );
  const bc = await childNamed(sh, 'bc');
  cleanup(() => killAndReap(bc));
  // echo has written its line and exited: nobody holds the pipe's write end.
  while (childrenOf(sh).length > 1) await sleep(10);
  const image = dir();
  await cliOk(['dump', String(bc), '-D', image]);
  assert.equal(readFileSync(out, 'utf8'), '', 'dumped before it printed anything');
  await restoreCli(image, cleanup);
  const expected = execFileSync('bc', ['-l'], { input: program, encoding: 'utf8' });
  assert.equal(await fileContent(out, /[^\\]\n$/), expected);
});

const FIFO_READER = `
import os, sys, time
os.closerange(3, 65536)
fifo, go = sys.argv[1], sys.argv[2]
fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
print('READY', flush=True)
while not os.path.exists(go):
    time.sleep(0.01)
data = b''
while True:
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        break
    if not chunk:
        break
    data += chunk
lines = data.split(b'\\n')[:-1]
print('GOT', len(lines), len(set(lines)), flush=True)
`;

test('a FIFO a process outside the dump writes to keeps its bytes, read once after the restore', async () => {
  const work = dir();
  const fifo = `${work}/fifo`;
  execFileSync('mkfifo', [fifo]);
  const reader = await startLogged(PYTHON, ['-c', FIFO_READER, fifo, `${work}/go`], /^READY\n/);
  // This test is the writer, outside the dump: the FIFO lives on with its bytes through it.
  const writer = openSync(fifo, 'r+');
  cleanup(() => closeSync(writer));
  writeSync(writer, Array.from({ length: 100 }, (_, i) => `line ${i}\n`).join(''));
  const image = dir();
  const dumped = await runCli(['dump', String(reader.pid), '-D', image]);
  assert.equal(dumped.code, 0, dumped.stderr);
  assert.match(
    dumped.stderr,
    new RegExp(
      `the FIFO ${fifo} is open in node \\(process ${process.pid}\\) too: its 790 buffered bytes stay in it`,
    ),
  );
  await restoreCli(image, cleanup);
  writeFileSync(`${work}/go`, '');
  assert.match(await fileContent(reader.out, /^GOT .*\n/m), /^GOT 100 100$/m);
});

const COUNTER = `
import os, time
os.closerange(3, 65536)
i = 0
while True:
    i += 1
    print(i, flush=True)
    time.sleep(0.02)
`;

test('a job whose stdout is a pipe to logger: dumped as external, restored with --inherit-fd, logger carries on', async () => {
  const work = dir();
  const log = `${work}/log`;
  // logger echoes each line it reads to its stderr, the log (--no-act: nothing reaches the syslog
  // socket, a datagram socket of the test's own).
  const syslog = `${work}/syslog`;
  await startLogged(
    PYTHON,
    [
      '-c',
      `import socket, time\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\ns.bind('${syslog}')\nprint('READY', flush=True)\ntime.sleep(600)`,
    ],
    /^READY\n/,
  );
  const sh = await startProcessLogged(
    log,
    'sh',
    ['-c', `"$0" -c "$1" | logger -s --no-act -u "$2" -t job`, PYTHON, COUNTER, syslog],
    /job.*: 3\n/,
    cleanup,
  );
  const job = await childNamed(sh, 'python3');
  const logger = await childNamed(sh, 'logger');
  cleanup(() => killAndReap(job));
  cleanup(() => killAndReap(logger));
  const key = readlinkSync(`/proc/${job}/fd/1`);
  // A second writer into logger's pipe, as a supervisor would keep: the job's death is no end of file.
  const writer = openSync(`/proc/${logger}/fd/0`, 'w');
  let open = true;
  const closeWriter = (): void => {
    if (open) closeSync(writer);
    open = false;
  };
  cleanup(closeWriter);
  const image = dir();
  const dumped = await runCli(['dump', String(job), '-D', image]);
  assert.equal(dumped.code, 0, dumped.stderr);
  assert.match(
    dumped.stderr,
    new RegExp(
      `fd 1 is ${key.replace(/[[\]]/g, '\\$&')}, shared with .*logger \\(process ${logger}\\).* outside the dump`,
    ),
  );
  const logged = (text: string): number[] => [...text.matchAll(/job.*: (\d+)$/gm)].map((m) => Number(m[1]));
  const last = logged(readFileSync(log, 'utf8')).at(-1)!;

  const without = await runCli(['restore', '-D', image]);
  assert.equal(without.code, 2, 'a usage error');
  assert.match(
    without.stderr,
    /fd 1 of process \d+ was pipe:\[\d+\], shared with .*logger .* --inherit-fd fd\[N\]:pipe:/,
  );
  const misspelt = await runCli([
    ...['restore', '-D', image, '--inherit-fd', `fd[1]:${key}`],
    ...['--inherit-fd', 'fd[1]:pipe:[1]'],
  ]);
  assert.match(misspelt.stderr, /--inherit-fd names pipe:\[1\], which .* has no descriptor of/);

  // Handed the same pipe (fd 3 of ferry), the restored job writes on into logger.
  const restore = spawn(CLI, ['restore', '-D', image, '--inherit-fd', `fd[3]:${key}`], {
    stdio: ['ignore', 'pipe', 'pipe', writer],
  });
  let out = '';
  restore.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  assert.equal(await new Promise((resolve) => restore.once('close', resolve)), 0);
  cleanup(() => killAndReap(Number(out.trim())));
  closeWriter();
  const text = await fileContent(log, new RegExp(`: ${last + 10}\n`));
  const numbers = logged(text);
  assert.deepEqual(
    numbers.slice(0, last + 10),
    Array.from({ length: last + 10 }, (_, i) => i + 1),
    'every line once, in order',
  );
});

test('redis-server with 100,000 keys: checkpoint, kill, restore; every key reads back and writes work', async () => {
  const host = '127.0.0.1';
  const port = await freePort(host);
  const redis = await startLogged(
    'redis-server',
    ['--port', String(port), '--bind', host, ...REDIS_OPTIONS],
    /Ready to accept connections/,
  );
  assert.match(loadKeys(host, port), new RegExp(`errors: 0, replies: ${KEYS}`));

  // A client still connected is a TCP connection ferry refuses (for now); redis runs on.
  const client = connect(port, host);
  await new Promise((resolve) => client.once('connect', resolve));
  const refused = await runCli(['dump', String(redis.pid), '-D', dir()]);
  client.destroy();
  assert.equal(refused.code, 1);
  assert.match(
    refused.stderr,
    new RegExp(`fd \\d+ is a TCP connection \\(127\\.0\\.0\\.1:${port} -> 127\\.0\\.0\\.1:\\d+\\)`),
  );
  assert.equal(traceState(redis.pid).tracerPid, 0);
  await sleep(100); // redis closes its side of the connection

  const image = dir();
  await cliOk(['dump', String(redis.pid), '-D', image]);
  assert.match(await cliOk(['show', image]), new RegExp(`TCP socket 127\\.0\\.0\\.1:${port} listening`));
  const pid = await restoreCli(image, cleanup, '--same-pid', 'require');
  assert.equal(pid, redis.pid);
  assert.equal(redisCli(host, port, 'DBSIZE'), String(KEYS));
  assert.equal(checkKeys(host, port), '-1');
  assert.equal(redisCli(host, port, 'SET', 'after', 'restore'), 'OK');
  assert.equal(redisCli(host, port, 'GET', 'after'), 'restore');
});

const NODE_SERVER = `
const http = require('http');
const state = process.argv[1];
let ticks = 0;
setInterval(() => ticks++, 5);
http
  .createServer((req, res) => res.setHeader('connection', 'close').end(state + ' ' + ticks))
  .listen(Number(process.argv[2]), '127.0.0.1', () => console.log('READY'));
`;

/** GET / on a new connection that the server closes: its body. */
function get(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer on port ${port}`)));
    req.on('error', reject).end();
  });
}

test('a Node.js HTTP server with a timer answers after restore with the state it held', async () => {
  const port = 18080;
  const state = `state-${process.pid}`;
  const server = await startLogged(process.execPath, ['-e', NODE_SERVER, state, String(port)], /^READY\n/);
  const before = /^(\S+) (\d+)$/.exec(await get(port));
  assert.equal(before?.[1], state);
  await sleep(100); // the server closes its side of the connection
  const image = dir();
  await cliOk(['dump', String(server.pid), '-D', image]);
  const pid = await restoreCli(image, cleanup);
  assert.ok(readdirSync(`/proc/${pid}/task`).length > 1, 'node runs with its threads');
  await sleep(100);
  const after = /^(\S+) (\d+)$/.exec(await get(port));
  assert.equal(after?.[1], state);
  assert.ok(Number(after?.[2]) > Number(before?.[2]), 'the timer ran on');
});

const ON_A_TERMINAL = `
import os, pty, sys, time
pid, master = pty.fork()
if pid == 0:
    n = 0
    while True:
        n += 1
        with open(sys.argv[1] + '.tmp', 'w') as f:
            f.write(str(n))
        os.rename(sys.argv[1] + '.tmp', sys.argv[1])
        time.sleep(0.01)
print(pid, flush=True)
while os.read(master, 1024):
    pass
`;

test('a process on a pseudo-terminal comes back on /dev/null with --tty null, and counts on', async () => {
  const count = `${dir()}/count`;
  const p = await startLogged(PYTHON, ['-c', ON_A_TERMINAL, count], /^\d+\n/);
  const child = Number(readFileSync(p.out, 'utf8'));
  cleanup(() => killAndReap(child));
  const seen = (): number => Number(readFileSync(count, 'utf8'));
  await fileContent(count, /^[1-9]/);
  assert.match(readlinkSync(`/proc/${child}/fd/0`), /^\/dev\/pts\/\d+$/);
  const image = dir();
  await cliOk(['dump', String(child), '-D', image]);
  assert.match(await cliOk(['show', image]), /^0 +tty +\S+ +\/dev\/pts\/\d+$/m);
  const atDump = seen();
  const restored = await restoreCli(image, cleanup, '--tty', 'null');
  for (const fd of [0, 1, 2]) assert.equal(readlinkSync(`/proc/${restored}/fd/${fd}`), '/dev/null');
  for (const until = Date.now() + 10_000; seen() < atDump + 20; await sleep(20))
    assert.ok(Date.now() < until, 'the restored process counts on');
});

const INOTIFY = `
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
base = sys.argv[1]
os.closerange(3, 65536)
fd = libc.inotify_init1(0)
wds = {}
for name in 'abcd':
    os.makedirs(f'{base}/{name}', exist_ok=True)
for name in 'abc':
    wds[name] = libc.inotify_add_watch(fd, f'{base}/{name}'.encode(), 0x100)  # IN_CREATE
libc.inotify_rm_watch(fd, wds.pop('b'))
wds['d'] = libc.inotify_add_watch(fd, f'{base}/d'.encode(), 0x100)
print('READY', sorted(wds.values()), flush=True)
while True:
    data = os.read(fd, 4096)
    at = 0
    while at < len(data):
        wd, mask, cookie, length = struct.unpack_from('iIII', data, at)
        name = data[at + 16:at + 16 + length].rstrip(b'\\0').decode()
        at += 16 + length
        print('event', wd, name, flush=True)
        if name == 'stop':
            print('rm', libc.inotify_rm_watch(fd, wds['a']), flush=True)
`;

test('inotify watches come back with their paths, masks and numbers, a gap in them included', async () => {
  const base = dir();
  const p = await startLogged(PYTHON, ['-c', INOTIFY, base], /^READY.*\n/);
  assert.match(readFileSync(p.out, 'utf8'), /^READY \[1, 3, 4\]$/m);
  const image = dir();
  await cliOk(['dump', String(p.pid), '-D', image]);
  const shown = await cliOk(['show', image]);
  assert.match(shown, new RegExp(`inotify watching ${base}/a \\(wd 1, mask 0x100\\), ${base}/c \\(wd 3`));
  await restoreCli(image, cleanup);
  for (const path of ['a/x', 'd/y', 'c/stop']) writeFileSync(`${base}/${path}`, '');
  const out = await fileContent(p.out, /^rm .*\n/m);
  assert.match(out, /^event 1 x\nevent 4 y\nevent 3 stop\nrm 0\n/m);
});

const UDP = `
import os, socket, sys
os.closerange(3, 65536)
port, peer = int(sys.argv[1]), int(sys.argv[2])
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(('127.0.0.1', port))
told = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
told.connect(('127.0.0.1', peer))
print('READY', flush=True)
count = 0
while True:
    data, sender = server.recvfrom(100)
    count += 1
    server.sendto(b'echo %d ' % count + data, sender)
    told.send(b'told %d' % count)
`;

test('UDP sockets come back bound, and with their default peer', async () => {
  const [port, peer] = [16421, 16422];
  const asker = createSocket('udp4');
  const listener = createSocket('udp4');
  cleanup(() => void asker.close());
  cleanup(() => void listener.close());
  await new Promise<void>((resolve) => listener.bind(peer, '127.0.0.1', resolve));
  const told: string[] = [];
  listener.on('message', (m) => told.push(m.toString()));
  const answers: string[] = [];
  asker.on('message', (m) => answers.push(m.toString()));
  const ask = async (what: string, n: number): Promise<void> => {
    asker.send(what, port, '127.0.0.1');
    for (const until = Date.now() + 10_000; answers.length < n || told.length < n; await sleep(20))
      assert.ok(Date.now() < until, `an answer to ${what}`);
  };
  const p = await startLogged(PYTHON, ['-c', UDP, String(port), String(peer)], /^READY\n/);
  await ask('one', 1);
  const image = dir();
  await cliOk(['dump', String(p.pid), '-D', image]);
  assert.match(
    await cliOk(['show', image]),
    new RegExp(`UDP socket 127\\.0\\.0\\.1:\\d+ to 127\\.0\\.0\\.1:${peer}`),
  );
  await restoreCli(image, cleanup);
  await ask('two', 2);
  assert.deepEqual(answers, ['echo 1 one', 'echo 2 two']);
  assert.deepEqual(told, ['told 1', 'told 2']);
});
