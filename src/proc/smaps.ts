// /proc/PID/smaps: each VMA's maps line followed by `Key: value [kB]` lines and `VmFlags: ...`.
import { MAPS_LINE_FORM, matchMapsLine, type MapsEntry } from './maps.js';
import { parseError } from './parse-error.js';

export interface SmapsEntry extends MapsEntry {
  /** Numeric fields in bytes (kB fields converted), e.g. Rss, Anonymous, Swap, AnonHugePages. */
  fields: Record<string, number>;
  /** Two-letter VmFlags mnemonics, e.g. ['rd', 'wr', 'mr', 'mw', 'me', 'ac']. */
  vmFlags: string[];
}

const FIELD = /^([A-Za-z_][A-Za-z0-9_]*):\s+(\d+)(?: kB)?$/;
const VMFLAGS = /^VmFlags:((?: [a-z0-9]{2})*) ?$/;

export function parseSmaps(text: string, source = 'smaps'): SmapsEntry[] {
  const entries: SmapsEntry[] = [];
  let current: SmapsEntry | undefined;
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (line === '' && i === lines.length - 1) return;
    const header = matchMapsLine(line);
    if (header) {
      if (header.end <= header.start) throw parseError(source, i + 1, MAPS_LINE_FORM, line);
      current = { ...header, fields: {}, vmFlags: [] };
      entries.push(current);
      return;
    }
    if (!current) throw parseError(source, i + 1, MAPS_LINE_FORM, line);
    const flags = VMFLAGS.exec(line);
    if (flags) {
      current.vmFlags = flags[1]!.split(' ').filter(Boolean);
      return;
    }
    const field = FIELD.exec(line);
    if (!field) throw parseError(source, i + 1, '"Key: value [kB]" or "VmFlags: ..."', line);
    const value = Number(field[2]);
    current.fields[field[1]!] = line.endsWith(' kB') ? value * 1024 : value;
  });
  return entries;
}
