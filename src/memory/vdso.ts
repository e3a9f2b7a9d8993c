// The kernel's own VMAs ([vvar], [vvar_vclock], [vdso]): the stub's are moved with mremap to where
// the image had them. The same kernel makes them the same size; a different size means a different
// kernel, and the restore is refused. [vsyscall] sits at a fixed address in every process.
import { FerryError } from '../errors.js';
import type { MapsEntry } from '../proc/maps.js';
import { NR } from '../sys/nr.js';
import type { RemoteCall } from '../tracee/remote.js';
import { findGap, type Span } from '../vma/gaps.js';
import type { RestoreContext } from '../state/context.js';
import type { VmaRecord } from './vmas.js';

const MOVABLE = new Set(['[vvar]', '[vvar_vclock]', '[vdso]']);
const MREMAP_MAYMOVE = 1;
const MREMAP_FIXED = 2;

const hex = (n: bigint): string => `0x${n.toString(16)}`;

/**
 * Put the stub's kernel VMAs where the image wants them. `occupied` lists what the stub has mapped
 * besides them, so the temporary stop on the way does not land on anything.
 */
export function placeKernelVmas(
  ctx: RestoreContext,
  image: readonly VmaRecord[],
  stub: readonly MapsEntry[],
  occupied: readonly Span[],
): void {
  const wanted = image.filter((v) => MOVABLE.has(v.name));
  const present = stub.filter((m) => MOVABLE.has(m.name));
  const calls: RemoteCall[] = [];
  for (const m of present) {
    if (!wanted.some((w) => w.name === m.name)) {
      calls.push({ name: `munmap(${m.name})`, nr: NR.munmap, args: [m.start, m.end - m.start] });
    }
  }
  const moves = wanted.map((w) => {
    const from = present.find((m) => m.name === w.name);
    const size = w.end - w.start;
    if (!from || from.end - from.start !== size) {
      const here = from ? `${(from.end - from.start) / 1024n} KiB` : 'absent';
      throw new FerryError(
        'FERRY_IMAGE_INCOMPATIBLE',
        `the image's ${w.name} is ${size / 1024n} KiB and this kernel's is ${here}: restore on the kernel the image was made on`,
      );
    }
    return { from, to: w, size };
  });
  // Two steps through a gap free in both layouts, so no move lands on a VMA not yet moved.
  const total = moves.reduce((n, m) => n + m.size, 0n);
  const temp = findGap([...image, ...stub, ...occupied], total);
  if (temp === undefined)
    throw new FerryError('FERRY_RESTORE_FAILED', 'no free address range to move the vDSO through');
  let at = temp;
  const staged = moves.map((m) => {
    calls.push({
      name: `mremap(${m.from.name}, ${hex(at)})`,
      nr: NR.mremap,
      args: [m.from.start, m.size, m.size, MREMAP_MAYMOVE | MREMAP_FIXED, at],
    });
    const stagedAt = at;
    at += m.size;
    return { ...m, stagedAt };
  });
  for (const m of staged) {
    calls.push({
      name: `mremap(${m.to.name}, ${hex(m.to.start)})`,
      nr: NR.mremap,
      args: [m.stagedAt, m.size, m.size, MREMAP_MAYMOVE | MREMAP_FIXED, m.to.start],
    });
  }
  ctx.remote.batch(calls);
}
