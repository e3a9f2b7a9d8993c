// /proc/meminfo: the host's memory, for load reports.
import { readFileSync } from 'node:fs';

/** MemAvailable and MemTotal, in bytes. */
export function hostMemory(text = readFileSync('/proc/meminfo', 'latin1')): {
  availableBytes: number;
  totalBytes: number;
} {
  const kib = (name: string): number =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return { availableBytes: kib('MemAvailable'), totalBytes: kib('MemTotal') };
}
