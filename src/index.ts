// The ferry library: everything the CLI does, typed, for Node programs that embed it.
export { startAgent, type Agent, type AgentOptions } from './agent/agent.js';
export { parseTokenFile, readTokenFile, type TokenEntry } from './agent/auth.js';
export type { HistoryEntry, JobReport, LoadReport } from './agent/jobs.js';
export {
  gatherLoads,
  startBalancer,
  type Balancer,
  type BalancerOptions,
  type DecisionEvent,
} from './cluster/balancer.js';
export {
  startDashboard,
  type Dashboard,
  type DashboardOptions,
  type DashboardState,
} from './cluster/dashboard.js';
export { drainHost, type DrainOptions, type DrainResult } from './cluster/drain.js';
export { ClusterStore, type HostRecord, type Intent, type JobRecord } from './cluster/etcd.js';
export {
  decide,
  placeJob,
  POLICIES,
  type Decision,
  type HostView,
  type JobView,
  type PolicyParams,
} from './cluster/policy.js';
export { check, CAP, type CheckReport, type DirtyTracking, type FeatureReport } from './check.js';
export { dump, type DumpOptions, type DumpResult } from './checkpoint.js';
export { demo, type DemoResult } from './demo.js';
export { ERROR_CODES, FerryError, isFerryError, type ErrorCode } from './errors.js';
export {
  inspect,
  inspectResultToJson,
  type InspectOptions,
  type InspectResult,
  type VmaReport,
} from './inspect.js';
export {
  migrate,
  MIGRATE_MODES,
  type MigrateMode,
  type MigrateOptions,
  type MigrateResult,
} from './migrate/migrate.js';
export type { LazyTotals } from './memory/lazy.js';
export type { PostCopyReport } from './memory/postcopy.js';
export type { RoundReport } from './memory/precopy.js';
export { dumpEvery, type EveryOptions, type EveryResult } from './periodic.js';
export type { AgentEndpoint } from './migrate/client.js';
export { readImage, type Image, type ProcessImage } from './read-image.js';
export { restore, type RestoreOptions, type RestoreResult } from './restore.js';
export { findProcess, findVma, vmaBytes, vmaContents, type VmaContent } from './show.js';
export type { Manifest, ProcessState } from './state/image.js';
export type { VmaRecord } from './memory/vmas.js';
export { isErrno, SysError } from './sys/errno.js';
export { parseVmaSelection, VMA_GROUPS, type VmaSelection } from './vma/select.js';
export type { PageCounts } from './vma/usage.js';
export { VMA_KIND_DESCRIPTIONS, VMA_KINDS, type Vma, type VmaKind } from './vma/vma.js';
export type { ScanMethod } from './vma/pages.js';
