// Readiness (GET /readyz): ready when the control database answers, the org catalog is loaded
// (org mode) and the proxy is not draining. The database is asked in the background every
// second (`select 1`, at most 900 ms), so a request never waits for it and /readyz turns 503
// within 2 s of PostgreSQL going away and back to 200 within 2 s of its return. Draining is
// one-way: once marked, the proxy is never ready again.
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { Runtime } from '../runtime.js';
import type { AdminDatabase } from './database.js';

export type Check = 'ok' | 'failing';

export interface ReadinessReport {
  status: 'ready' | 'not_ready' | 'draining';
  checks: { listener: Check; control: Check; catalog: Check };
}

const intervalMs = 1000;
const pingTimeoutMs = 900;

export class Readiness {
  private controlUp = false;
  private checked = false;
  private draining = false;
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<void> | undefined;

  constructor(
    private readonly runtime: Runtime,
    private readonly db: AdminDatabase,
    private readonly metrics: Pick<Metrics, 'controlUp'>,
    private readonly log: Logger,
  ) {}

  /** Starts the background check; the first runs at once. */
  start(): void {
    this.checking = this.check();
    this.timer = setInterval(() => {
      // One check at a time: a slow database is not asked twice.
      this.checking ??= this.check();
    }, intervalMs);
    this.timer.unref();
  }

  /** From now on the proxy is draining: /readyz answers 503 "draining". */
  markDraining(): void {
    this.draining = true;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  report(): ReadinessReport {
    const catalog = this.runtime.org?.catalog.status();
    const checks = {
      listener: this.draining ? 'failing' : 'ok',
      control: this.controlUp ? 'ok' : 'failing',
      catalog: catalog === undefined || catalog.loadedAt !== undefined ? 'ok' : 'failing',
    } satisfies ReadinessReport['checks'];
    const ready = Object.values(checks).every((check) => check === 'ok');
    return { status: this.draining ? 'draining' : ready ? 'ready' : 'not_ready', checks };
  }

  /** Stops the background check and waits for a check under way. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.checking;
  }

  private async check(): Promise<void> {
    try {
      await this.db.ping(pingTimeoutMs);
      this.set(true, undefined);
    } catch (error) {
      this.set(false, error instanceof Error ? error.message : String(error));
    } finally {
      this.checking = undefined;
    }
  }

  /** Records the check; a change is logged once (warn when lost, info when back). */
  private set(up: boolean, reason: string | undefined): void {
    const changed = up !== this.controlUp || !this.checked;
    this.controlUp = up;
    this.checked = true;
    this.metrics.controlUp(up);
    if (!changed) return;
    if (up) this.log.info({ event: 'admin_control', up }, 'control database answers');
    else
      this.log.warn(
        { event: 'admin_control', up, err: reason },
        'control database does not answer: /readyz is 503',
      );
  }
}
