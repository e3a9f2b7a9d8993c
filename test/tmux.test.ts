// A tmux server with two panes through dump and restore: its pty masters come back under the same
// /dev/pts names, each pane's shell on its pty as its controlling terminal with its foreground
// group, as its background job has it too, and the panes carry on: one keeps counting, the other
// runs what it is sent.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { cleanupAfterAll, workDirs } from './helpers/cleanup.js';
import { cliOk, restoreCli } from './helpers/cli.js';
import { becomeSubreaper, childNamed, killTree, reapOrphans, treeOf } from './helpers/reaper.js';

const cleanup = cleanupAfterAll();
const { dir } = workDirs('ferry-tmux', cleanup);
before(becomeSubreaper);

/** The fields of /proc/PID/stat after the command, or none once the process is gone. */
function statFields(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'latin1').split(') ')[1]!.split(' ');
  } catch {
    return undefined;
  }
}

/**
 * Of each session leader under `root` (the panes' shells): its controlling tty and foreground group.
 * The counting pane's `sleep 0.05`s come and go meanwhile: one gone is no session leader.
 */
function terminals(root: number): string[] {
  return treeOf(root)
    .slice(1)
    .flatMap((pid) => {
      const f = statFields(pid);
      return f && Number(f[3]) === pid ? [`${f[4]} ${f[5]}`] : [];
    });
}

const COUNTER = 'i=0; while :; do i=$((i+1)); echo n=$i; sleep 0.05; done';

test('a tmux server with two panes: dump, restore; its panes carry on, on the same terminals', async () => {
  const socket = `${dir()}/sock`;
  const tmux = (...args: string[]): string =>
    execFileSync('tmux', ['-S', socket, ...args], {
      encoding: 'utf8',
      env: { ...process.env, TERM: 'xterm' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  tmux('new-session', '-d', '-s', 't', '-x', '80', '-y', '24', 'bash --norc --noprofile');
  tmux('split-window', '-t', 't', 'sh', '-c', COUNTER);
  const server = Number(tmux('display-message', '-p', '#{pid}').trim());
  cleanup(() => killTree(server));
  const panes = (): string => tmux('list-panes', '-t', 't', '-F', '#{pane_tty} #{pane_pid}');
  const shown = (pane: number): string => tmux('capture-pane', '-p', '-t', `t.${pane}`);
  const count = (): number => Math.max(0, ...[...shown(1).matchAll(/n=(\d+)/g)].map((m) => Number(m[1])));
  while (count() < 3) await sleep(20);
  // A job of the first pane's shell, in its session but not leading it: its controlling terminal
  // is the pane's, as its shell's is.
  tmux('send-keys', '-t', 't.0', 'sleep 600 &', 'Enter');
  const shell = Number(panes().split('\n')[0]!.split(' ')[1]);
  const job = await childNamed(shell, 'sleep');
  const ttyOf = (pid: number): string =>
    readFileSync(`/proc/${pid}/stat`, 'latin1').split(') ')[1]!.split(' ')[4]!;
  assert.equal(ttyOf(job), ttyOf(shell));
  const before = panes();
  const ttys = terminals(server);

  const image = dir();
  const last = count();
  const tree = treeOf(server);
  await cliOk(['dump', String(server), '-D', image]);
  await reapOrphans(tree);
  const restored = await restoreCli(image, cleanup);
  cleanup(() => killTree(restored));

  assert.equal(panes(), before, 'the same ttys and processes');
  assert.equal(
    ttyOf(job),
    ttyOf(shell),
    'the job has its controlling terminal back, inherited from its shell',
  );
  assert.deepEqual(
    terminals(restored),
    ttys,
    'each shell has its pty as controlling terminal, with its foreground group',
  );
  tmux('send-keys', '-t', 't.0', 'echo hello-$((6*7))', 'Enter');
  for (const until = Date.now() + 10_000; !/^hello-42$/m.test(shown(0)) && Date.now() < until;)
    await sleep(20);
  assert.match(shown(0), /^hello-42$/m, 'the shell runs what it is sent');
  for (const until = Date.now() + 10_000; count() <= last + 5 && Date.now() < until;) await sleep(20);
  assert.ok(count() > last + 5, `the counter goes on from ${last} (now ${count()})`);
});
