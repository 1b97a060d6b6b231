// This proxy's registrations, one per (server, database) it switches contexts in: each is an
// instance in the database's pgvpd_private.proxy_instances with a lease, and the key its switch
// grants are signed with (pool/grant.ts). Registered over the control connections on first need,
// renewed every third of the lease, and left when the proxy stops.
//
// Guarantees: one registration at a time per (server, database), however many checkouts ask
// at once (they share the one in flight); a key is handed out only while its lease, as this
// process last confirmed it, has not run out; a key the database says is no longer active
// (renew_instance answers false) is dropped, and the next keyFor registers anew; a renewal that
// fails (the database unreachable, the call refused) says nothing about the instance, so the key
// is kept until that lease ends (and dropped sooner by forget() once a switch under it is
// refused); close() leaves every instance within 2 s, never throws, and no key is handed out
// after it. The secret never reaches a log.
import { hostname } from 'node:os';
import { proxyErrors } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { poolErrors } from '../pool/pool-errors.js';
import type { InstanceKey } from '../pool/grant.js';
import type { ControlPools } from './control.js';

/** A server other than control_url's (org mode, dedicated placement); undefined: control_url's. */
export type InstanceServer = { host: string; port: number } | undefined;

/** One registration, as the status route shows it. */
export interface InstanceDescription {
  /** `host:port`, or null for control_url's server. */
  server: string | null;
  database: string;
  instance: string;
  registeredAt: string;
  /** The lease's end as this process last confirmed it (the database's may be a little later). */
  leaseUntil: string;
}

/** `<hostname>:<pid>:<listen port>`: which proxy process an instance row belongs to. */
export function instanceName(port: number): string {
  return `${hostname()}:${String(process.pid)}:${String(port)}`;
}

/** How long close() waits for the databases to record that the instances left. */
const leaveBoundMs = 2000;

interface Registration {
  readonly id: string;
  readonly database: string;
  readonly server: InstanceServer;
  readonly key: InstanceKey;
  readonly registeredAt: number;
  leaseUntil: number;
  readonly timer: NodeJS.Timeout;
  renewing: boolean;
}

interface Pending {
  readonly database: string;
  readonly server: InstanceServer;
  readonly key: Promise<InstanceKey>;
}

function idOf(database: string, server: InstanceServer): string {
  return JSON.stringify([server?.host ?? null, server?.port ?? null, database]);
}

function serverName(server: InstanceServer): string | null {
  return server ? `${server.host}:${String(server.port)}` : null;
}

function sqlstateOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/**
 * Whether the database answered (pgvpd_control_up, as ControlPools counts it): a SQLSTATE outside
 * classes 08 and 57P; a socket error (ECONNREFUSED) has none.
 */
function answered(error: unknown): boolean {
  const code = sqlstateOf(error);
  return code !== undefined && !/^(08|57P)/.test(code);
}

const messageOf = (error: unknown): string =>
  error instanceof Error ? error.message : String(error);

export class InstanceKeys {
  private readonly registered = new Map<string, Registration>();
  private readonly pending = new Map<string, Pending>();
  private closing: Promise<void> | undefined;

  constructor(
    private readonly control: ControlPools,
    /** instance_lease: how long a registration lives unless renewed (10..86400 s). */
    private readonly leaseSeconds: number,
    /**
     * The name registered (instanceName()); the composition root may set it once the listener's
     * port is known. Registrations made before keep the name they were made with.
     */
    public name: string,
    private readonly logger: Logger,
    private readonly metrics?: Metrics,
  ) {}

  /**
   * The key of this proxy's active registration in `database` on `server`, registering first if
   * there is none (concurrent callers share one registration). Rejects with a ProxyError: the
   * database's SQLSTATE when it refused to register (contextFailed), 57P01 once close() began.
   */
  keyFor(database: string, server?: InstanceServer): Promise<InstanceKey> {
    if (this.closing) return Promise.reject(poolErrors.closed());
    const id = idOf(database, server);
    const current = this.registered.get(id);
    if (current) {
      if (current.leaseUntil > Date.now()) return Promise.resolve(current.key);
      this.drop(current, 'its lease ran out before a renewal got through');
    }
    const pending = this.pending.get(id);
    if (pending) return pending.key;
    const key = this.register(id, database, server);
    const clear = (): void => {
      if (this.pending.get(id)?.key === key) this.pending.delete(id);
    };
    key.then(clear, clear);
    this.pending.set(id, { database, server, key });
    return key;
  }

  /**
   * After a switch refused under `instance`: drops its key if it is still the one held for
   * (server, database), so that the next keyFor registers anew. The instance is not left (its
   * other backends' contexts stay); a refused one is inactive already.
   */
  forget(database: string, server: InstanceServer, instance: string): void {
    const current = this.registered.get(idOf(database, server));
    if (current?.key.instance === instance) this.drop(current, 'a switch under it was refused');
  }

  /**
   * Renews every registration held now (what the timers do, each every third of the lease);
   * settles when these renewals have, never rejects. One whose renewal is under way already is
   * not renewed twice.
   */
  async renew(): Promise<void> {
    await Promise.all([...this.registered.values()].map((entry) => this.renewOne(entry)));
  }

  /** The registrations held now. */
  describe(): InstanceDescription[] {
    return [...this.registered.values()].map((entry) => ({
      server: serverName(entry.server),
      database: entry.database,
      instance: entry.key.instance,
      registeredAt: new Date(entry.registeredAt).toISOString(),
      leaseUntil: new Date(entry.leaseUntil).toISOString(),
    }));
  }

  /**
   * Stops renewing and leaves every instance, those still registering included (pgvpd.leave_instance:
   * contexts switched under them die). Waits at most 2 s; a leave that fails or is late is
   * logged, and the instance then ends with its lease. Never rejects; idempotent.
   */
  close(): Promise<void> {
    this.closing ??= this.leaveAll();
    return this.closing;
  }

  private async leaveAll(): Promise<void> {
    const entries = [...this.registered.values()];
    this.registered.clear();
    for (const entry of entries) clearInterval(entry.timer);
    const leaving = entries.map((entry) => this.leave(entry.database, entry.server, entry.key));
    for (const pending of this.pending.values()) {
      leaving.push(
        pending.key.then(
          (key) => this.leave(pending.database, pending.server, key),
          () => undefined,
        ),
      );
    }
    if (leaving.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => {
        resolve(true);
      }, leaveBoundMs);
    });
    const timedOut = await Promise.race([Promise.all(leaving).then(() => false), late]);
    clearTimeout(timer);
    if (timedOut)
      this.logger.warn(
        { event: 'instance_leave_late', timeout_ms: leaveBoundMs },
        'not every proxy instance left within 2 s; their leases end them',
      );
  }

  private async leave(database: string, server: InstanceServer, key: InstanceKey): Promise<void> {
    const fields = { database, server: serverName(server), instance: key.instance };
    try {
      await this.control.leaveInstance(database, server, key.instance);
      this.logger.info({ event: 'instance_left', ...fields }, 'proxy instance left');
    } catch (error) {
      this.logger.warn(
        { event: 'instance_leave_failed', ...fields, err: messageOf(error) },
        'proxy instance could not leave; its lease ends it',
      );
    }
  }

  private async register(
    id: string,
    database: string,
    server: InstanceServer,
  ): Promise<InstanceKey> {
    const sentAt = Date.now();
    let key: InstanceKey;
    try {
      key = await this.control.registerInstance(database, server, this.name, this.leaseSeconds);
      this.metrics?.controlUp(true);
      this.metrics?.instanceRegistration('ok');
    } catch (error) {
      this.metrics?.controlUp(answered(error));
      this.metrics?.instanceRegistration('error');
      throw proxyErrors.contextFailed(
        sqlstateOf(error),
        `register_instance in database "${database}": ${messageOf(error)}`,
      );
    }
    // Closed meanwhile: close() leaves it; it is not kept or renewed.
    if (this.closing) return key;
    const entry: Registration = {
      id,
      database,
      server,
      key,
      registeredAt: sentAt,
      // The database's lease started after this was sent: this end is never later than its.
      leaseUntil: sentAt + this.leaseSeconds * 1000,
      timer: setInterval(
        () => {
          void this.renewOne(entry);
        },
        (this.leaseSeconds * 1000) / 3,
      ).unref(),
      renewing: false,
    };
    this.registered.set(id, entry);
    this.logger.info(
      {
        event: 'instance_registered',
        database,
        server: serverName(server),
        instance: key.instance,
        lease_s: this.leaseSeconds,
      },
      'proxy instance registered',
    );
    return key;
  }

  /** One renewal; a tick while the last one is still under way does nothing. */
  private async renewOne(entry: Registration): Promise<void> {
    if (entry.renewing || this.registered.get(entry.id) !== entry) return;
    entry.renewing = true;
    const sentAt = Date.now();
    try {
      const renewed = await this.control.renewInstance(
        entry.database,
        entry.server,
        entry.key.instance,
        this.leaseSeconds,
      );
      this.metrics?.controlUp(true);
      if (renewed) entry.leaseUntil = sentAt + this.leaseSeconds * 1000;
      else this.drop(entry, 'the database no longer holds it active (retired or lease expired)');
    } catch (error) {
      this.metrics?.controlUp(answered(error));
      if (entry.leaseUntil <= Date.now()) {
        this.drop(entry, `its lease ran out without a renewal: ${messageOf(error)}`);
      } else {
        this.logger.warn(
          {
            event: 'instance_renew_failed',
            database: entry.database,
            server: serverName(entry.server),
            instance: entry.key.instance,
            lease_until: new Date(entry.leaseUntil).toISOString(),
            err: messageOf(error),
          },
          'proxy instance not renewed; its key is kept until its lease ends',
        );
      }
    } finally {
      entry.renewing = false;
    }
  }

  /** Stops holding `entry` (if it is still the held one): the next keyFor registers anew. */
  private drop(entry: Registration, reason: string): void {
    if (this.registered.get(entry.id) !== entry) return;
    this.registered.delete(entry.id);
    clearInterval(entry.timer);
    this.logger.warn(
      {
        event: 'instance_dropped',
        database: entry.database,
        server: serverName(entry.server),
        instance: entry.key.instance,
        reason,
      },
      'proxy instance key dropped; the next switch registers anew',
    );
  }
}
