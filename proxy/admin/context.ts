// What the routes share: the runtime record, the HTTP server's database, readiness, where setup
// links point and what redeem prints for connecting, the /setup page's files, and the rate-limit
// counters.
import type { Runtime } from '../runtime.js';
import type { ConnectTarget } from './connect-info.js';
import type { AdminDatabase } from './database.js';
import type { RateLimitCounters } from './rate-limits.js';
import type { Readiness } from './readiness.js';
import type { SetupFiles } from './setup-files.js';

export interface AdminContext {
  readonly runtime: Runtime;
  readonly db: AdminDatabase;
  readonly readiness: Readiness;
  /** The origin of setup links (public_url, else the admin listener's), without a trailing slash. */
  publicUrl(): string;
  readonly connect: ConnectTarget;
  readonly setupFiles: SetupFiles;
  /** The rate-limit counters, shared by the listeners; none: the instance has its own. */
  readonly rateLimits?: RateLimitCounters;
}
