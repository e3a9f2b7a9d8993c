// /proc/PID/mountinfo: one line per mount,
//   `id parent major:minor root mount-point options [optional fields] - fstype source super-options`
// Paths have space, tab, newline and backslash escaped as octal (\040).
import { parseError } from './parse-error.js';

export interface Mount {
  id: number;
  major: number;
  minor: number;
  /** The directory of the filesystem this mount shows (not "/" for a bind mount of a subtree). */
  root: string;
  mountPoint: string;
}

const LINE = /^(\d+) \d+ (\d+):(\d+) (\S+) (\S+) /;

const unescape = (path: string): string =>
  path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));

export function parseMountinfo(text: string, source = 'mountinfo'): Mount[] {
  const lines = text.split('\n').filter((l, i, all) => !(l === '' && i === all.length - 1));
  return lines.map((line, i) => {
    const m = LINE.exec(line);
    if (!m) throw parseError(source, i + 1, '"id parent major:minor root mount-point ..."', line);
    return {
      id: Number(m[1]),
      major: Number(m[2]),
      minor: Number(m[3]),
      root: unescape(m[4]!),
      mountPoint: unescape(m[5]!),
    };
  });
}
