// What ferry tells whoever looks after the processes it works in, should ferry itself die (the
// guardian, src/guardian.ts): each report is made before the change it announces.

export interface TraceeWatch {
  /** Ferry is about to freeze process `pid` (started at `startTime`, /proc/PID/stat) and work in it. */
  hold(pid: number, startTime: bigint): void;
  /** Ferry is about to map a scratch region of `size` bytes at `base` in `pid`. */
  scratch(pid: number, base: bigint, size: number): void;
  /** Ferry unmapped that scratch region. */
  unscratch(pid: number): void;
  /** Ferry let go of `pid`: released it as it was, or killed it. */
  release(pid: number): void;
}
