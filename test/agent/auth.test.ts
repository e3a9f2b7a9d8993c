// Agent tokens: the file format, bearer headers, and uid-bound tokens.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import {
  ANYONE,
  authenticate,
  authorize,
  parseTokenFile,
  tokenFileWarning,
  type Caller,
} from '../../src/agent/auth.js';
import { checkLeastPrivilege, hostUser } from '../../src/agent/privilege.js';
import type { Manifest } from '../../src/state/image.js';

const FILE = '# operators\nadmin-token-0123456789\n\nalice-token-0123456789 uid=1000\n';

test('tokens authenticate callers; a uid-bound token acts only on that uid', () => {
  const tokens = parseTokenFile(FILE, 'tokens');
  assert.deepEqual(authenticate(tokens, 'Bearer admin-token-0123456789'), {
    uid: undefined,
    token: Buffer.from('admin-token-0123456789'),
    tokenId: '0',
  });
  const alice = authenticate(tokens, 'bearer alice-token-0123456789');
  assert.ok(alice);
  assert.deepEqual([alice.uid, alice.tokenId], [1000, '1']);
  for (const header of [
    undefined,
    '',
    'Bearer',
    'Basic YWxpY2U=',
    'Bearer admin-token-012345678',
    'Bearer x',
  ])
    assert.equal(authenticate(tokens, header), undefined, String(header));
  authorize(alice, 1000, 'process 1');
  assert.throws(() => authorize(alice, 0, 'process 1'), { code: 'FERRY_AUTH' });
  authorize(ANYONE, 0, 'process 1');
});

test('a token file others may read is warned of', () => {
  const dir = mkdtempSync(`${tmpdir()}/ferry-auth-`);
  try {
    const file = `${dir}/tokens`;
    writeFileSync(file, FILE, { mode: 0o644 });
    assert.match(tokenFileWarning(file) ?? '', /may be read by others \(mode 644\): chmod 600/);
    chmodSync(file, 0o600);
    assert.equal(tokenFileWarning(file), undefined);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test('a uid-bound token may have restored only what its uid has, with no capability', () => {
  const dir = mkdtempSync(`${tmpdir()}/ferry-users-`);
  try {
    writeFileSync(`${dir}/passwd`, 'root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n');
    writeFileSync(`${dir}/group`, 'root:x:0:\nalice:x:1000:\nvideo:x:44:alice,bob\nwheel:x:10:bob\n');
    const user = (uid: number) => hostUser(uid, { passwd: `${dir}/passwd`, group: `${dir}/group` });
    assert.deepEqual(user(1000), { uid: 1000, gids: [1000, 44] });
    const caps = { effective: 0n, permitted: 0n, inheritable: 0n, bounding: (1n << 41n) - 1n, ambient: 0n };
    const image = (
      creds: Partial<{ uids: number[]; gids: number[]; groups: number[]; caps: typeof caps }>,
      more: { files?: object[]; shm?: object[]; threads?: object[]; task?: object } = {},
    ) =>
      ({
        state: {
          pid: 7,
          files: more.files ?? [],
          shm: more.shm ?? [],
          threads: more.threads ?? [],
          task: more.task ?? null,
          creds: {
            uids: [1000, 1000, 1000, 1000],
            gids: [1000, 1000, 1000, 1000],
            groups: [44],
            caps,
            ...creds,
          },
        },
        children: [],
      }) as unknown as Manifest;
    const alice: Caller = { uid: 1000, token: undefined, tokenId: '1' };
    checkLeastPrivilege(alice, image({}), user);
    const refused: [string, Parameters<typeof image>[0]][] = [
      ['uid 0', { uids: [1000, 0, 0, 0] }],
      ['group 10', { groups: [44, 10] }],
      ['group 0', { gids: [1000, 0, 1000, 1000] }],
      ['capabilities \\(effective', { caps: { ...caps, effective: 1n << 21n } }],
      ['capabilities \\(ambient', { caps: { ...caps, ambient: 1n } }],
    ];
    for (const [what, creds] of refused)
      assert.throws(() => checkLeastPrivilege(alice, image(creds), user), {
        code: 'FERRY_AUTH',
        message: new RegExp(`uid 1000, and process 7 of the image would run with ${what}`),
      });
    // What the restore would do for it with privileges of its own.
    const socket = (port: number, tcp: object | null = null, options: object[] = []): object => {
      const address = Buffer.alloc(16);
      address.writeUInt16LE(2, 0);
      address.writeUInt16BE(port, 2);
      return { kind: 'socket', fd: 3, address, tcp, options };
    };
    const option = (name: string, value: number): object => {
      const raw = Buffer.alloc(4);
      raw.writeInt32LE(value);
      return { name, value: raw };
    };
    const lowest = Number(readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'latin1'));
    checkLeastPrivilege(
      alice,
      image(
        {},
        {
          files: [socket(lowest), socket(0, null, [option('SO_PRIORITY', 6)])],
          shm: [{ id: 5, uid: 1000 }],
          threads: [{ tid: 7, sched: { policy: 3, nice: 5 } }],
          task: { oomScoreAdj: 100, loginuid: 2 ** 32 - 1 },
        },
      ),
      user,
    );
    const privileged: [string, Parameters<typeof image>[1]][] = [
      ['have a TCP connection \\(fd 3\\), which only TCP_REPAIR', { files: [socket(40000, {})] }],
      [
        'set SO_MARK on fd 3, which needs CAP_NET_ADMIN',
        { files: [socket(0, null, [option('SO_MARK', 1)])] },
      ],
      ['set SO_PRIORITY 7 on fd 3', { files: [socket(0, null, [option('SO_PRIORITY', 7)])] }],
      ['attach SysV shared memory 5, which uid 0 owns', { shm: [{ id: 5, uid: 0 }] }],
      ['run thread 7 under real-time', { threads: [{ tid: 7, sched: { policy: 1, nice: 0 } }] }],
      ['run thread 7 at nice -5', { threads: [{ tid: 7, sched: { policy: 0, nice: -5 } }] }],
      ['have an OOM score adjustment of -500', { task: { oomScoreAdj: -500, loginuid: 1000 } }],
      ['have the audit login uid 0', { task: { oomScoreAdj: 0, loginuid: 0 } }],
    ];
    // (A host that lets users bind any port, as some containers do, has no port to refuse.)
    if (lowest > 0)
      privileged.push([
        `bind port ${lowest - 1} \\(fd 3\\): below ${lowest}`,
        { files: [socket(lowest - 1)] },
      ]);
    for (const [what, more] of privileged)
      assert.throws(() => checkLeastPrivilege(alice, image({}, more), user), {
        code: 'FERRY_AUTH',
        message: new RegExp(`uid 1000, and process 7 of the image would ${what}`),
      });
    checkLeastPrivilege(ANYONE, image({ uids: [0, 0, 0, 0] }), user);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test('a bad token file is refused with its line', () => {
  assert.throws(() => parseTokenFile('short\n', 't'), /t:1: a token needs at least 16/);
  assert.throws(() => parseTokenFile('# only comments\n', 't'), /holds no token/);
  assert.throws(() => parseTokenFile('admin-token-0123456789 gid=5\n', 't'), /t:1: unknown field "gid=5"/);
});
