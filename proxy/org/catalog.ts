// Org mode's view of the catalog: a snapshot of servers, orgs and org users (and the secret of
// unknown users' mock salts, shared by every proxy of the catalog) held in memory,
// loaded over a pgvpd_proxy connection with pgvpd.catalog_snapshot() and reloaded whenever the
// database says `NOTIFY pgvpd_catalog`. A lost connection keeps the last snapshot in service and
// reconnects every second; a reload that fails keeps the old snapshot too.
import pg from 'pg';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';

export interface CatalogServer {
  name: string;
  host: string | null;
  port: number | null;
  tls: 'disable' | 'require' | 'verify-full';
}

export interface CatalogOrg {
  id: string;
  database_name: string;
  status: 'active' | 'suspended';
  placement: 'shared' | 'dedicated';
  server: string;
  target_database: string;
  /** How long a pooled backend serves one client; null or absent: the proxy's pool_mode. */
  pool_mode?: 'session' | 'transaction' | null;
}

/** How long a pooled backend serves one client of an org. */
export type PoolMode = NonNullable<CatalogOrg['pool_mode']>;

export interface CatalogUser {
  org_id: string;
  username: string;
  verifier: string;
  connect_as: string;
}

export interface Snapshot {
  servers: CatalogServer[];
  orgs: CatalogOrg[];
  users: CatalogUser[];
  /**
   * 32 bytes in lowercase hex, made once per database: the secret of unknown users' mock salts,
   * the same for every proxy of the catalog. Absent from older SQL.
   */
  mock_secret?: string | null;
}

/** What a readiness check or a status report reads of the catalog. */
export interface CatalogStatus {
  /** Whether the catalog's connection (LISTEN pgvpd_catalog) is open now. */
  connected: boolean;
  /** When the snapshot in service was loaded (ms since the epoch); undefined before the first. */
  loadedAt: number | undefined;
  /** Orgs in the snapshot, any status. */
  orgs: number;
  /** Org users in the snapshot. */
  users: number;
}

export class Catalog {
  private byDatabase = new Map<string, CatalogOrg>();
  private users = new Map<string, CatalogUser>();
  private servers = new Map<string, CatalogServer>();
  private secret: Buffer | undefined;
  private client: pg.Client | undefined;
  private closed = false;
  private reloading: Promise<void> | undefined;
  private retry: NodeJS.Timeout | undefined;
  private loadedAt: number | undefined;

  constructor(
    private readonly url: string,
    private readonly log: Logger,
    private readonly metrics?: Metrics,
  ) {}

  /** Loads the first snapshot (failing loudly if it cannot) and starts listening. */
  async start(): Promise<void> {
    await this.connect();
  }

  org(databaseName: string): CatalogOrg | undefined {
    return this.byDatabase.get(databaseName);
  }

  user(orgId: string, username: string): CatalogUser | undefined {
    return this.users.get(`${orgId}\0${username}`);
  }

  server(name: string): CatalogServer | undefined {
    return this.servers.get(name);
  }

  /** The catalog's mock-salt secret (32 bytes), or undefined when its SQL has none. */
  mockSecret(): Buffer | undefined {
    return this.secret;
  }

  /** The snapshot in service and the connection it is kept current over. */
  status(): CatalogStatus {
    return {
      connected: this.client !== undefined,
      loadedAt: this.loadedAt,
      orgs: this.byDatabase.size,
      users: this.users.size,
    };
  }

  /**
   * Orgs in the snapshot (any status) by the pool mode they are served in: their own, or
   * `fallback` (the proxy's pool_mode) for those without one.
   */
  poolModes(fallback: PoolMode): Record<PoolMode, number> {
    const counts: Record<PoolMode, number> = { session: 0, transaction: 0 };
    for (const org of this.byDatabase.values()) counts[org.pool_mode ?? fallback] += 1;
    return counts;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    await this.client?.end().catch(() => undefined);
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, application_name: 'pgvpd-catalog' });
    client.on('error', (error) => {
      this.log.warn(
        { event: 'catalog', err: error.message },
        'catalog connection lost; keeping the last snapshot',
      );
    });
    client.on('end', () => {
      if (this.client === client) this.client = undefined;
      this.scheduleReconnect();
    });
    client.on('notification', () => {
      void this.reload();
    });
    await client.connect();
    await client.query('listen pgvpd_catalog');
    this.client = client;
    // Loaded after LISTEN, so that no change can fall between the load and the subscription.
    await this.reload();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.retry) return;
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.connect().catch((error: unknown) => {
        this.log.warn(
          { event: 'catalog', err: (error as Error).message },
          'catalog reconnect failed',
        );
        this.scheduleReconnect();
      });
    }, 1000);
    this.retry.unref();
  }

  private reload(): Promise<void> {
    // Coalesce bursts of notifications: one reload runs, one more follows if asked meanwhile.
    const run = async (): Promise<void> => {
      const client = this.client;
      if (!client) return;
      const { rows } = await client.query<{ snapshot: Snapshot }>(
        'select pgvpd.catalog_snapshot() as snapshot',
      );
      const snapshot = rows[0]?.snapshot;
      if (!snapshot) throw new Error('pgvpd.catalog_snapshot() returned nothing');
      this.apply(snapshot);
    };
    const previous = this.reloading ?? Promise.resolve();
    const next = previous.then(run, run).catch((error: unknown) => {
      this.metrics?.catalogReload('error');
      this.log.warn(
        { event: 'catalog', err: (error as Error).message },
        'catalog reload failed; keeping the last snapshot',
      );
    });
    this.reloading = next;
    return next;
  }

  /** Called after every snapshot is applied (the first load included). */
  onApplied(listener: () => void): void {
    this.appliedListeners.push(listener);
  }

  private readonly appliedListeners: (() => void)[] = [];

  private apply(snapshot: Snapshot): void {
    this.servers = new Map(snapshot.servers.map((s) => [s.name, s]));
    this.byDatabase = new Map(snapshot.orgs.map((o) => [o.database_name, o]));
    this.users = new Map(snapshot.users.map((u) => [`${u.org_id}\0${u.username}`, u]));
    this.loadedAt = Date.now();
    const suspended = snapshot.orgs.filter((o) => o.status !== 'active').length;
    this.metrics?.catalogReload('ok', {
      at: this.loadedAt,
      active: snapshot.orgs.length - suspended,
      suspended,
      users: snapshot.users.length,
    });
    const secret = snapshot.mock_secret;
    if (typeof secret === 'string' && /^[0-9a-f]{64}$/.test(secret)) {
      this.secret = Buffer.from(secret, 'hex');
    } else {
      if (secret !== undefined && secret !== null) {
        this.log.warn({ event: 'catalog' }, 'catalog mock_secret is not 64 hex digits; ignored');
      }
      this.secret = undefined;
    }
    this.log.debug(
      { event: 'catalog', orgs: snapshot.orgs.length, users: snapshot.users.length },
      'catalog loaded',
    );
    for (const listener of this.appliedListeners) listener();
  }
}
