// ferry show <dir> [--json] [--vma <addr|name|kind>] [--raw]
import { resolve } from 'node:path';
import { once } from 'node:events';
import { FerryError } from '../errors.js';
import { toJsonValue } from '../image/json.js';
import { readImage, type Image, type ProcessImage } from '../read-image.js';
import { findProcess, findVma, vmaBytes, vmaContents, type VmaContent } from '../show.js';
import { formatSockaddr } from '../state/fd-socket.js';
import type { FdRecord } from '../state/files.js';
import { SOCK } from '../sys/socket.js';
import { signalName } from '../sys/signal.js';
import { parsePid, printJson, type Command } from './command.js';
import { formatBytes, renderTable } from './format.js';

const hex = (n: bigint): string => `0x${n.toString(16)}`;

function stored(c: VmaContent): string {
  if (c.vma.content === 'kernel') return 'kernel';
  if (c.vma.content === 'layout') return 'layout only';
  if (c.vma.content === 'remote')
    return `sent once running (post-copy)${c.storedPages ? `, ${c.storedPages} pages here` : ''}`;
  return `${c.storedPages} pages${c.zeroPages ? ` + ${c.zeroPages} zero` : ''}`;
}

function vmaTable(contents: VmaContent[]): string {
  return renderTable(
    [
      { header: 'START' },
      { header: 'END' },
      { header: 'SIZE', align: 'right' },
      { header: 'PERM' },
      { header: 'KIND' },
      { header: 'STORED' },
      { header: 'NAME' },
    ],
    contents.map((c) => [
      c.vma.start.toString(16),
      c.vma.end.toString(16),
      formatBytes(Number(c.vma.end - c.vma.start)),
      c.vma.perms,
      c.vma.kind,
      stored(c),
      c.vma.name + (c.vma.deleted ? ' (deleted)' : ''),
    ]),
  );
}

function render(image: Image): string {
  const { manifest } = image;
  const s = manifest.state;
  const lines = [
    `image ${image.location}: process ${s.pid} (${s.command}) ${s.mm.exe ?? '(executable deleted)'}`,
    `made ${manifest.created} on ${manifest.host.hostname}, Linux ${manifest.host.kernel}, by ferry ${manifest.ferry}`,
  ];
  if (s.selection !== null)
    lines.push(
      `partial dump: pages stored only for VMAs matching "${s.selection}"; the others come back empty`,
    );
  if (manifest.networkLock !== null)
    lines.push(
      `network lock: nftables table inet ${manifest.networkLock} holds its TCP connections' packets until the restore`,
    );
  if (manifest.parent)
    lines.push(
      `incremental: builds on ${resolve(image.location, manifest.parent.path)} (pages unchanged since come from it)`,
    );
  if (image.layers.length > 1)
    lines.push(`${image.layers.length} page layers: ${image.layers.map((l) => l.name).join(', ')}`);
  if (manifest.tree.length > 1) {
    lines.push(`a tree of ${manifest.tree.length} processes:`);
    for (const m of manifest.tree) {
      const exited = m.exit === null ? '' : `, a zombie (wait status 0x${m.exit.toString(16)})`;
      lines.push(`  ${m.pid}: child of ${m.ppid}, group ${m.pgid}, session ${m.sid}${exited}`);
    }
  }
  return [...lines, ...image.processes.map(renderProcess)].join('\n');
}

function renderProcess(p: ProcessImage): string {
  const s = p.state;
  const lines = [
    '',
    `process ${s.pid} (${s.command}) ${s.mm.exe ?? '(executable deleted)'}`,
    `command line: ${s.cmdline.join(' ')}`,
    `cwd ${s.fs.cwd}, umask ${s.fs.umask.toString(8).padStart(4, '0')}, uid ${s.creds.uids.join('/')}, gid ${s.creds.gids.join('/')}`,
  ];
  lines.push('', vmaTable(vmaContents(p)), '');
  for (const g of s.shm) {
    const key = g.key === 0 ? 'private' : `key 0x${(g.key >>> 0).toString(16)}`;
    const removed = g.removed ? ', marked for removal' : '';
    lines.push(`SysV shared memory ${g.id} (${key}, ${g.size} bytes, mode ${g.mode.toString(8)}${removed})`);
  }
  for (const { tid, name, regs: r, sigmask, xstate, rseq } of s.threads) {
    lines.push(
      `thread ${tid} (${name}): rip ${hex(r.rip)} rsp ${hex(r.rsp)} rax ${hex(r.rax)} orig_rax ${hex(r.orig_rax)} fs_base ${hex(r.fs_base)}`,
      `  signal mask ${hex(sigmask)}, ${xstate.length}-byte xsave area, rseq ${rseq ? hex(rseq.abi) : 'none'}`,
    );
  }
  const actions = s.signals.map(
    (a) =>
      `${signalName(a.signal)} ${a.handler === 1n ? 'ignored' : a.handler === 0n ? 'default' : `-> ${hex(a.handler)}`}`,
  );
  lines.push(`signals: ${actions.length ? actions.join(', ') : 'all at their defaults'}`, '');
  lines.push(
    renderTable(
      [{ header: 'FD' }, { header: 'KIND' }, { header: 'FLAGS' }, { header: 'WHAT' }],
      s.files.map((f) => [String(f.fd), f.kind, `0${f.flags.toString(8)}`, describeFd(f)]),
    ),
  );
  return lines.join('\n');
}

/** The signals of a mask, by name. */
function signalsOf(mask: bigint): string {
  const names: string[] = [];
  for (let s = 1; s <= 64; s++) if ((mask >> BigInt(s - 1)) & 1n) names.push(signalName(s));
  return names.join(', ') || 'no signal';
}

/** What a saved descriptor refers to, in words. */
function describeFd(f: FdRecord): string {
  switch (f.kind) {
    case 'file':
      return `${f.path} @${f.pos}${f.ghost ? ` (deleted, ${f.ghost.size} bytes saved)` : ''}`;
    case 'dup':
      return `the open file of fd ${f.of}`;
    case 'inherit':
      return `the open file of fd ${f.of} of process ${f.pid}`;
    case 'pipe':
      return `${f.write ? 'write' : 'read'} end of pipe ${f.pipe}${f.data ? ` (${f.data.size} bytes buffered)` : ''}`;
    case 'eventfd':
      return `eventfd, count ${f.count}${f.semaphore ? ', semaphore' : ''}`;
    case 'epoll':
      return `epoll watching ${f.watches.map((w) => `fd ${w.fd}`).join(', ') || 'nothing'}`;
    case 'socket': {
      const proto = f.type === SOCK.STREAM ? 'TCP' : 'UDP';
      const state =
        f.backlog !== null
          ? `listening (backlog ${f.backlog})`
          : f.peer
            ? `to ${formatSockaddr(f.peer)}`
            : '';
      const queued = f.tcp
        ? `, established: ${f.tcp.send.size} bytes queued to send (${f.tcp.unsent} not sent yet), ${f.tcp.recv.size} to read`
        : '';
      return `${proto} socket ${formatSockaddr(f.address)} ${state}`.trim() + queued;
    }
    case 'timerfd': {
      const ms = (ns: bigint): string => `${Number(ns) / 1e6} ms`;
      const period = f.interval > 0n ? `, every ${ms(f.interval)}` : '';
      const next = f.value > 0n ? `next in ${ms(f.value)}` : f.ticks > 0n ? 'expired' : 'disarmed';
      return `timerfd (clock ${f.clock}) ${next}${period}, ${f.ticks} expirations unread`;
    }
    case 'unix': {
      const type = f.type === SOCK.STREAM ? 'stream' : f.type === SOCK.DGRAM ? 'datagram' : 'seqpacket';
      const peer =
        f.backlog !== null
          ? `listening on ${f.name} (backlog ${f.backlog})`
          : f.peer !== null
            ? `paired with socket ${f.peer}`
            : f.name !== null
              ? `bound to ${f.name}`
              : 'unconnected';
      const queued = f.queue ? `, ${f.queue.lengths.length} message(s) queued` : '';
      return `Unix ${type} socket ${f.ino}, ${peer}${queued}`;
    }
    case 'memfd':
      return `memfd ${f.name} @${f.pos} (${f.content.size} bytes saved${f.seals ? `, seals 0x${f.seals.toString(16)}` : ''})`;
    case 'fifo':
      return `FIFO ${f.path}${f.data ? ` (${f.data.size} bytes buffered)` : ''}`;
    case 'signalfd':
      return `signalfd for ${signalsOf(f.mask)}`;
    case 'pty':
      return `the master of /dev/pts/${f.index}${f.locked ? ' (locked)' : ''}`;
    case 'tty':
      return f.pty === null ? f.path : `${f.path} (the pty of the image's master)`;
    case 'external':
      return `${f.key}, shared with ${f.holder} outside the image: restore with --inherit-fd fd[N]:${f.key}`;
    case 'fanotify':
      return `fanotify marking ${f.marks.map((m) => `${m.kind} ${m.path} (mask 0x${m.mask.toString(16)})`).join(', ') || 'nothing'}`;
    case 'packet': {
      const type = f.type === SOCK.DGRAM ? 'datagram' : 'raw';
      const members = f.memberships.map(
        (m) => `${['multicast', 'promiscuous', 'allmulti', 'unicast'][m.type]} on ${m.interface}`,
      );
      return `packet socket (${type}, protocol 0x${f.protocol.toString(16)}) ${f.interface === '' ? 'on every interface' : `bound to ${f.interface}`}${members.length > 0 ? `, ${members.join(', ')}` : ''}`;
    }
    case 'inotify':
      return `inotify watching ${f.watches.map((w) => `${w.path}${w.via === null ? '' : ` (deleted, through fd ${w.via})`} (wd ${w.wd}, mask 0x${w.mask.toString(16)})`).join(', ') || 'nothing'}`;
    default:
      return f.path;
  }
}

async function writeRaw(image: ProcessImage, which: string): Promise<void> {
  if (process.stdout.isTTY)
    throw new FerryError('FERRY_USAGE', '--raw writes binary data: redirect it to a file or a pipe');
  const vma = findVma(image, which);
  if (vma.content !== 'pages') {
    process.stderr.write(
      `ferry: warning: VMA ${hex(vma.start)} has no stored content (${vma.content}): writing zeros\n`,
    );
  }
  for (const chunk of vmaBytes(image, vma)) {
    if (!process.stdout.write(chunk)) await once(process.stdout, 'drain');
  }
}

export const showCommand: Command = {
  name: 'show',
  summary: 'show what an image holds; --raw writes one VMA as stored',
  usage: 'ferry show <dir> [--json] [--pid <pid>] [--vma <addr|name|kind>] [--raw]',
  options: { vma: { type: 'string' }, raw: { type: 'boolean' }, pid: { type: 'string' } },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    const image = await readImage(positionals[0]!);
    const which = values.vma as string | undefined;
    const pid = values.pid === undefined ? undefined : parsePid(values.pid as string);
    const proc = findProcess(image, pid);
    if (values.raw) {
      if (which === undefined) throw new FerryError('FERRY_USAGE', '--raw needs --vma <addr|name|kind>');
      await writeRaw(proc, which);
      return 0;
    }
    const only = which === undefined ? undefined : findVma(proc, which);
    if (values.json) {
      const storedOf = (p: ProcessImage): unknown[] =>
        vmaContents(p)
          .filter((c) => only === undefined || c.vma === only)
          .map((c) => ({ start: hex(c.vma.start), storedPages: c.storedPages, zeroPages: c.zeroPages }));
      printJson({
        location: image.location,
        stored: storedOf(proc),
        processes: image.processes.map((p) => ({ pid: p.state.pid, stored: storedOf(p) })),
        manifest: toJsonValue(image.manifest),
      });
    } else if (only !== undefined) {
      process.stdout.write(`${vmaTable(vmaContents(proc).filter((c) => c.vma === only))}\n`);
    } else {
      process.stdout.write(`${pid === undefined ? render(image) : renderProcess(proc).trimStart()}\n`);
    }
    return 0;
  },
};
