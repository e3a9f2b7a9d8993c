// Blocking sleep for the synchronous ptrace loops, which must not yield to the event loop.
let cell: Int32Array | undefined;

export function sleepMs(ms: number): void {
  // Made on first use: a startup snapshot is taken without SharedArrayBuffer.
  cell ??= new Int32Array(new SharedArrayBuffer(4));
  Atomics.wait(cell, 0, 0, ms);
}
