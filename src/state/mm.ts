// The address space's layout as the kernel keeps it: code, data, brk, stack, arguments and
// environment bounds, the auxiliary vector, /proc/PID/exe, and the personality (which shapes how
// the address space is laid out). Restored with one prctl(PR_SET_MM, PR_SET_MM_MAP).
import { base64, hex64, integer, nullable, object, string, type Infer } from '../image/schema.js';
import { readProcBytes, readProcLink, readProcText } from '../proc/files.js';
import { NR } from '../sys/nr.js';
import { PR, PR_SET_MM } from '../sys/prctl.js';
import { asUser, expectFd, lowestFreeFd, type DumpContext, type RestoreContext } from './context.js';
import { AT_FDCWD, O } from '../sys/fcntl.js';

export const mmRecord = object({
  startCode: hex64,
  endCode: hex64,
  startData: hex64,
  endData: hex64,
  startBrk: hex64,
  brk: hex64,
  startStack: hex64,
  argStart: hex64,
  argEnd: hex64,
  envStart: hex64,
  envEnd: hex64,
  auxv: base64(1024),
  exe: nullable(string({ max: 4096 })),
  personality: integer(0, 2 ** 32 - 1),
});
export type MmRecord = Infer<typeof mmRecord>;

const PRCTL_MM_MAP_SIZE = 104;

export function dumpMm(ctx: DumpContext): MmRecord {
  const [brk] = ctx.remote.batch([{ name: 'brk', nr: NR.brk, args: [0] }]);
  const s = ctx.stat;
  const exe = readProcLink(ctx.pid, 'exe');
  const deleted = exe.endsWith(' (deleted)');
  if (deleted)
    ctx.warn(`its executable ${exe} was deleted: the restored process's /proc/PID/exe will be the stub's`);
  return {
    startCode: s.startCode,
    endCode: s.endCode,
    startData: s.startData,
    endData: s.endData,
    startBrk: s.startBrk,
    brk: brk!,
    startStack: s.startStack,
    argStart: s.argStart,
    argEnd: s.argEnd,
    envStart: s.envStart,
    envEnd: s.envEnd,
    auxv: readProcBytes(ctx.pid, 'auxv'),
    exe: deleted ? null : exe,
    personality: parseInt(readProcText(ctx.pid, 'personality'), 16),
  };
}

/** Set the layout; the executable is opened for PR_SET_MM_MAP's exe_fd and closed again. */
export function restoreMm(ctx: RestoreContext, rec: MmRecord): void {
  const remote = ctx.remote;
  const freeFd = lowestFreeFd(ctx.pid);
  const map = Buffer.alloc(PRCTL_MM_MAP_SIZE);
  const fields = [
    rec.startCode,
    rec.endCode,
    rec.startData,
    rec.endData,
    rec.startBrk,
    rec.brk,
    rec.startStack,
    rec.argStart,
    rec.argEnd,
    rec.envStart,
    rec.envEnd,
  ];
  fields.forEach((v, i) => map.writeBigUInt64LE(v, i * 8));
  map.writeBigUInt64LE(remote.put(rec.auxv), 88);
  map.writeUInt32LE(rec.auxv.length, 96);
  map.writeInt32LE(rec.exe === null ? -1 : freeFd, 100);
  const setMm = {
    name: 'prctl(PR_SET_MM_MAP)',
    nr: NR.prctl,
    args: [PR.SET_MM, PR_SET_MM.MAP, remote.put(map), map.length, 0],
  };
  const personality = { name: 'personality', nr: NR.personality, args: [rec.personality] };
  if (rec.exe === null) {
    remote.batch([personality, setMm]);
    return;
  }
  const open = asUser(ctx, {
    name: `open(${rec.exe})`,
    nr: NR.openat,
    args: [AT_FDCWD, remote.putString(rec.exe), O.RDONLY | O.CLOEXEC, 0],
  });
  const close = { name: 'close', nr: NR.close, args: [freeFd] };
  const results = remote.batch([personality, ...open.calls, setMm, close]);
  expectFd(results[1 + open.at], freeFd, `open(${rec.exe})`);
}
