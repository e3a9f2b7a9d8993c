// /proc/PID/maps: one line per VMA, `start-end perms offset dev inode [name]`.
import { parseError } from './parse-error.js';

export interface MapsEntry {
  start: bigint;
  end: bigint;
  /** Four characters: r/-, w/-, x/-, then p (private) or s (shared). */
  perms: string;
  offset: bigint;
  /** Device as `major:minor` in hex, as the kernel prints it. */
  dev: string;
  inode: bigint;
  /** Path or pseudo-name ([heap], [stack], [vdso], [anon:x]); '' for anonymous memory. */
  name: string;
}

const HEADER =
  /^([0-9a-f]+)-([0-9a-f]+) ([r-][w-][x-][ps]) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+)(?: +(.*))?$/;

/** Parse one maps-format line, or return null when it is not one (smaps interleaves other lines). */
export function matchMapsLine(line: string): MapsEntry | null {
  const m = HEADER.exec(line);
  if (!m) return null;
  const [, start, end, perms, offset, dev, inode, name] = m as unknown as string[];
  return {
    start: BigInt(`0x${start}`),
    end: BigInt(`0x${end}`),
    perms: perms!,
    offset: BigInt(`0x${offset}`),
    dev: dev!,
    inode: BigInt(inode!),
    name: name ?? '',
  };
}

export const MAPS_LINE_FORM = '"start-end perms offset dev inode [name]"';

/** Parse the whole maps text; `source` names the file in error messages. */
export function parseMaps(text: string, source = 'maps'): MapsEntry[] {
  const entries: MapsEntry[] = [];
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (line === '' && i === lines.length - 1) return;
    const entry = matchMapsLine(line);
    if (!entry || entry.end <= entry.start) throw parseError(source, i + 1, MAPS_LINE_FORM, line);
    entries.push(entry);
  });
  return entries;
}
