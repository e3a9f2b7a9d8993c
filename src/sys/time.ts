// Blocking sleep for the synchronous ptrace loops, which must not yield to the event loop.
const cell = new Int32Array(new SharedArrayBuffer(4));

export function sleepMs(ms: number): void {
  Atomics.wait(cell, 0, 0, ms);
}
