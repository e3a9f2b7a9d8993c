// One error class for everything ferry refuses or fails at, with a stable code per kind of failure.
// Codes never change meaning; docs/errors.md lists them and a test keeps the two in step.

/** Every code ferry can raise, with the one-line meaning documented in docs/errors.md. */
export const ERROR_CODES = {
  FERRY_USAGE: 'the command line or an option is malformed',
  FERRY_NO_SUCH_PROCESS: 'no process has this PID',
  FERRY_PROCESS_EXITED: 'the process exited while ferry was working on it',
  FERRY_ZOMBIE: 'the process is a zombie: it has exited and holds no memory',
  FERRY_KERNEL_THREAD: 'the PID names a kernel thread, which has no user address space',
  FERRY_PERMISSION: 'ferry lacks the privilege to read or trace the process',
  FERRY_BAD_VMA_SPEC: 'a VMA selection term is malformed or unknown',
  FERRY_PARSE: 'a /proc file or other kernel output did not have the expected form',
  FERRY_SYSCALL: 'a system call failed; the error names the call, its arguments and the errno',
  FERRY_TRACE: 'the traced process did not stop or resume as ptrace promised',
  FERRY_UNSUPPORTED: 'this kernel or machine lacks a feature the operation needs',
  FERRY_UNSUPPORTED_STATE:
    'the process holds state ferry cannot checkpoint; the message names it and its kind',
  FERRY_IMAGE_INVALID: 'the directory holds no ferry image, or its manifest does not fit the schema',
  FERRY_IMAGE_CORRUPT: 'an image part is missing, truncated, or does not match its checksum',
  FERRY_IMAGE_INCOMPATIBLE: 'the image was made on a kernel or CPU this host cannot restore it on',
  FERRY_IMAGE_PARTIAL:
    "the image holds some VMAs' pages only (dump --vmas): it restores stopped (--stopped), for inspection, not running",
  FERRY_IMAGE_WRITE: 'writing the image failed (disk full, I/O error, no permission)',
  FERRY_PID_TAKEN: 'the original PID is in use and --same-pid require was given',
  FERRY_NO_TERMINAL: 'the image had a terminal and this restore has none to give it',
  FERRY_RESTORE_FAILED: 'the restore failed midway; its stub was killed and nothing was left behind',
  FERRY_CONNECTION: 'a connection to an agent could not be made, was lost, or carried something unexpected',
  FERRY_AUTH:
    'the agent refused the request: a missing or wrong token, a process or image the caller may not act on, an image the agent did not seal, a migration stream not sealed for it',
  FERRY_LIMIT:
    'the agent is at a limit it keeps (concurrent migration streams, in all or per token: try again later; a request body too large)',
  FERRY_BUSY:
    'the agent will not move the job now: it is pinned (--no-migrate), not running, or another job is being moved from its host',
  FERRY_MIGRATION_FAILED:
    'the migration did not complete: the process runs on at the source, nothing at the target',
  FERRY_MIGRATION_IN_DOUBT:
    'the target was told to run the process and then could not be reached: the source is left stopped (SIGSTOP) for the operator to decide',
  FERRY_INTERRUPTED:
    'a signal (SIGINT, SIGTERM, SIGHUP) stopped the command before it was done: it undid what it had begun',
  FERRY_TRACKING_LOST:
    'an incremental dump cannot build on its parent: the process is not tracked since that image',
  FERRY_INTERNAL: 'an internal check failed: a bug in ferry',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** The base of every error ferry throws on purpose; `code` is stable, `message` is for people. */
export class FerryError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FerryError';
    this.code = code;
  }
}

/** True when `err` is a FerryError with one of the given codes. */
export function isFerryError(err: unknown, ...codes: ErrorCode[]): err is FerryError {
  return err instanceof FerryError && (codes.length === 0 || codes.includes(err.code));
}
