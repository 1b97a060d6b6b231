// The proxy's Prometheus metrics (prom-client): pgvpd's own pgvpd_* metrics in one registry per
// runtime, rendered by the admin server's GET /metrics after the process_* / nodejs_* metrics
// (process-metrics.ts: prom-client's default names, so that standard dashboards work, read only at
// scrape time), which describe the process and so are registered once per process, however many
// proxies it runs.
//
// Guarantees:
// - Every label takes its value from a fixed set chosen here (mode, phase, outcome, reason,
//   sqlstate, state, side, method, status class, readying kind, registration result), or, for
//   `route`, from the admin server's route patterns (`unmatched` when none matched). No org,
//   user, database, tenant or role name is ever a label value: a SQLSTATE or method outside its
//   set is recorded as `other`.
// - Recording is a counter or histogram update at a connection's milestones (accept, the first
//   ReadyForQuery, a refusal, close) and at pool, control and catalog events (a checkout, the
//   readying of a backend, a transaction linked in transaction mode, an instance registration);
//   nothing here runs per message, and the bytes a client moved are added once, at close, from
//   its socket's bytesRead / bytesWritten. Gauges of what exists now (sessions by phase, active
//   orgs, pool sessions) are read at scrape time from the sources.
// - Names follow Prometheus' rules (base units, `_total` only on counters, `_info` = 1), so the
//   pgvpd_* lines pass `promtool check metrics`.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { PoolStats } from './pool/session-pool.js';
import { registerProcessMetrics } from './process-metrics.js';

export type Mode = 'app' | 'org';
export type SessionPhase = 'startup' | 'route' | 'auth' | 'context' | 'pipe';
export type HandshakeOutcome = 'ok' | 'error';
export type AuthFailureReason = 'password' | 'unknown_database' | 'suspended' | 'bad_username';
export type PoolCloseReason =
  'idle' | 'lifetime' | 'broken' | 'reset_failed' | 'shutdown' | 'discarded';
export type CancelOutcome = 'forwarded' | 'unknown_key';
export type TlsSide = 'client' | 'upstream';
export type ApiAuthFailureReason = 'invalid_token' | 'forbidden';
export type InviteRedeemOutcome = 'ok' | 'gone' | 'invalid_verifier';
/**
 * What readying a pooled backend for its client took (pool/switch.ts): nothing sent (`none`),
 * only settings that differed (`settings`), the owner's context switched in without a reset
 * (`switch`: a fresh backend, one reset at release, or the same owner's context emptied), or an
 * owner change: reset, settings and switch (`reset`).
 */
export type ReadyingKind = 'none' | 'settings' | 'restore' | 'switch' | 'reset';
export type InstanceRegistrationResult = 'ok' | 'error';

const readyingKinds: readonly ReadyingKind[] = ['none', 'settings', 'restore', 'switch', 'reset'];

/** The kind of a readying from what readyFor() reports of it (its ReadyResult). */
export function readyingKind(result: {
  statements: number;
  ownerChanged: boolean;
  switched: boolean;
  restored?: boolean;
}): ReadyingKind {
  if (result.statements === 0) return 'none';
  if (result.ownerChanged) return 'reset';
  if (result.restored) return 'restore';
  return result.switched ? 'switch' : 'settings';
}

let processRegistry: Registry | undefined;

/** The process's metrics (process-metrics.ts), in a registry of the process's own, set up on first use. */
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    registerProcessMetrics(processRegistry);
  }
  return processRegistry;
}

const phases: readonly SessionPhase[] = ['startup', 'route', 'auth', 'context', 'pipe'];

/** The SQLSTATEs the proxy itself sends; any other (e.g. relayed from upstream) is `other`. */
export const proxySqlstates: ReadonlySet<string> = new Set([
  '08P01',
  '08006',
  '28000',
  '28P01',
  '3D000',
  '53300',
  '57P01',
  'XX000',
]);

/** The refusals that are auth failures, by ProxyError kind. */
const authFailureKinds: ReadonlyMap<string, AuthFailureReason> = new Map<string, AuthFailureReason>(
  [
    ['password_authentication_failed', 'password'],
    ['unknown_database', 'unknown_database'],
    ['org_suspended', 'suspended'],
    ['bad_username', 'bad_username'],
    ['no_user', 'bad_username'],
  ],
);

const httpMethods: ReadonlySet<string> = new Set([
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'DELETE',
  'PATCH',
  'OPTIONS',
]);

/** What the scrape-time gauges read: a live session's mode, phase and org (tenant). */
export interface SessionSource {
  readonly mode: Mode;
  readonly phase: SessionPhase | 'closed';
  readonly identity: { readonly tenant?: string | null };
}

/** Where the scrape-time gauges read from; each is optional (the proxy's parts differ by mode). */
export interface MetricsSources {
  sessions?: () => Iterable<SessionSource>;
  pool?: () => PoolStats;
}

export interface MetricsOptions {
  mode: Mode;
  /** pgvpd's version, for pgvpd_build_info. */
  version: string;
  /** App mode with pool_mode: the pool's and the login throttle's metrics too. */
  pooled?: boolean;
}

// Seconds: a handshake takes milliseconds, a session minutes to days.
const shortBuckets = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];
const sessionBuckets = [0.01, 0.1, 1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600];
const waitBuckets = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30];
// Readying a backend: 0.1–50 ms when it runs a statement, a little beyond for a slow server.
const readyingBuckets = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

export class Metrics {
  /** This runtime's pgvpd_* metrics; never prom-client's global registry. */
  readonly registry = new Registry();
  private readonly process = processMetrics();
  /** The Content-Type of render()'s text (Prometheus text format 0.0.4). */
  readonly contentType: string;
  readonly mode: Mode;
  private sources: MetricsSources = {};

  private readonly connections: Counter<'mode'>;
  private readonly handshakes: Histogram<'mode' | 'outcome'>;
  private readonly sessionDurations: Histogram<'mode'>;
  private readonly clientErrors: Counter<'mode' | 'sqlstate'>;
  private readonly authFailures: Counter<'mode' | 'reason'>;
  private readonly authThrottled: Counter;
  private readonly contextIssue: Histogram;
  private readonly controlConnectionUp: Gauge;
  private readonly catalogReloads: Counter<'outcome'>;
  private readonly catalogLastReload: Gauge;
  private readonly catalogOrgs: Gauge<'status'>;
  private readonly catalogUsers: Gauge;
  private readonly poolCheckouts: Histogram;
  private readonly poolTimeouts: Counter;
  private readonly poolOpened: Counter;
  private readonly poolClosed: Counter<'reason'>;
  private readonly poolTransactions: Counter;
  private readonly poolOwnerSwitches: Counter<'kind'>;
  private readonly poolReadying: Histogram<'kind'>;
  private readonly instanceRegistrations: Counter<'result'>;
  private readonly cancels: Counter<'outcome'>;
  private readonly tlsFailures: Counter<'side'>;
  private readonly receivedBytes: Counter<'mode'>;
  private readonly sentBytes: Counter<'mode'>;
  private readonly drainingGauge: Gauge;
  private readonly httpRequests: Counter<'route' | 'method' | 'code'>;
  private readonly httpDurations: Histogram<'route'>;
  private readonly httpLimited: Counter<'route'>;
  private readonly apiAuthFailures: Counter<'reason'>;
  private readonly inviteRedeems: Counter<'outcome'>;

  constructor(options: MetricsOptions) {
    this.mode = options.mode;
    const registers = [this.registry];
    this.contentType = this.registry.contentType;
    const mode = this.mode;
    const sources = (): MetricsSources => this.sources;

    new Gauge({
      name: 'pgvpd_build_info',
      help: 'pgvpd version and proxy mode; always 1',
      labelNames: ['version', 'mode'],
      registers,
    }).set({ version: options.version, mode }, 1);
    this.connections = new Counter({
      name: 'pgvpd_client_connections_total',
      help: 'Client TCP connections accepted',
      labelNames: ['mode'],
      registers,
    });
    this.connections.inc({ mode }, 0);
    new Gauge({
      name: 'pgvpd_client_sessions',
      help: 'Client sessions open now, by handshake phase (pipe: served by a backend)',
      labelNames: ['mode', 'phase'],
      registers,
      collect() {
        const counts = new Map<SessionPhase, number>(phases.map((p) => [p, 0]));
        for (const s of sources().sessions?.() ?? []) {
          if (s.phase !== 'closed') counts.set(s.phase, (counts.get(s.phase) ?? 0) + 1);
        }
        for (const [phase, count] of counts) this.set({ mode, phase }, count);
      },
    });
    this.handshakes = new Histogram({
      name: 'pgvpd_handshake_duration_seconds',
      help: 'From accept to the first ReadyForQuery (ok) or to the end of a failed handshake (error)',
      labelNames: ['mode', 'outcome'],
      buckets: shortBuckets,
      registers,
    });
    this.sessionDurations = new Histogram({
      name: 'pgvpd_session_duration_seconds',
      help: 'From accept to close, for every client connection but cancel requests',
      labelNames: ['mode'],
      buckets: sessionBuckets,
      registers,
    });
    this.clientErrors = new Counter({
      name: 'pgvpd_client_errors_total',
      help: "FATAL ErrorResponses the proxy sent to clients, by SQLSTATE (other: outside the proxy's own set)",
      labelNames: ['mode', 'sqlstate'],
      registers,
    });
    this.authFailures = new Counter({
      name: 'pgvpd_auth_failures_total',
      help: 'Refused logins; an unknown user and a wrong password are both password',
      labelNames: ['mode', 'reason'],
      registers,
    });
    this.contextIssue = new Histogram({
      name: 'pgvpd_context_issue_duration_seconds',
      help: 'Round trip of issuing a signed context over the control connection',
      buckets: shortBuckets,
      registers,
    });
    this.controlConnectionUp = new Gauge({
      name: 'pgvpd_control_connection_up',
      help: 'Whether the control connection last answered (1) or failed (0)',
      registers,
    });
    this.cancels = new Counter({
      name: 'pgvpd_cancel_requests_total',
      help: 'CancelRequests received: forwarded to a backend, or with a key the proxy did not issue',
      labelNames: ['outcome'],
      registers,
    });
    this.tlsFailures = new Counter({
      name: 'pgvpd_tls_handshake_failures_total',
      help: 'Failed TLS handshakes, with clients or with the upstream',
      labelNames: ['side'],
      registers,
    });
    this.receivedBytes = new Counter({
      name: 'pgvpd_client_received_bytes_total',
      help: 'Bytes read from clients, added when each client connection closes',
      labelNames: ['mode'],
      registers,
    });
    this.sentBytes = new Counter({
      name: 'pgvpd_client_sent_bytes_total',
      help: 'Bytes written to clients, added when each client connection closes',
      labelNames: ['mode'],
      registers,
    });
    this.receivedBytes.inc({ mode }, 0);
    this.sentBytes.inc({ mode }, 0);
    this.drainingGauge = new Gauge({
      name: 'pgvpd_draining',
      help: 'Whether the proxy is draining for shutdown (1) or serving (0)',
      registers,
    });
    this.drainingGauge.set(0);

    // Org mode only: the catalog does not exist in app mode. The login throttle and the pool
    // exist in org mode and in app mode with pool_mode.
    const orgRegisters = mode === 'org' ? registers : [];
    const poolRegisters = mode === 'org' || options.pooled === true ? registers : [];
    this.authThrottled = new Counter({
      name: 'pgvpd_auth_throttled_total',
      help: 'Failed logins whose answer the login throttle held back',
      registers: poolRegisters,
    });
    this.catalogReloads = new Counter({
      name: 'pgvpd_catalog_reloads_total',
      help: 'Catalog snapshot loads, by outcome',
      labelNames: ['outcome'],
      registers: orgRegisters,
    });
    this.catalogLastReload = new Gauge({
      name: 'pgvpd_catalog_last_reload_timestamp_seconds',
      help: 'When the catalog snapshot in service was loaded (Unix time)',
      registers: orgRegisters,
    });
    this.catalogOrgs = new Gauge({
      name: 'pgvpd_catalog_orgs',
      help: 'Orgs in the catalog snapshot in service, by status',
      labelNames: ['status'],
      registers: orgRegisters,
    });
    this.catalogUsers = new Gauge({
      name: 'pgvpd_catalog_users',
      help: 'Org users in the catalog snapshot in service',
      registers: poolRegisters,
    });
    new Gauge({
      name: 'pgvpd_active_orgs',
      help: 'Distinct orgs with at least one open session past routing',
      registers: poolRegisters,
      collect() {
        const orgs = new Set<string>();
        for (const s of sources().sessions?.() ?? []) {
          const org = s.identity.tenant;
          if (s.phase !== 'closed' && typeof org === 'string') orgs.add(org);
        }
        this.set(orgs.size);
      },
    });
    new Gauge({
      name: 'pgvpd_pool_sessions',
      help: 'Pooled upstream sessions, by state',
      labelNames: ['state'],
      registers: poolRegisters,
      collect() {
        const stats = sources().pool?.();
        this.set({ state: 'idle' }, stats?.idle ?? 0);
        this.set({ state: 'busy' }, stats?.busy ?? 0);
        this.set({ state: 'opening' }, stats?.opening ?? 0);
      },
    });
    new Gauge({
      name: 'pgvpd_pool_waiting_clients',
      help: 'Clients queued for a pooled session',
      registers: poolRegisters,
      collect() {
        this.set(sources().pool?.().waiting ?? 0);
      },
    });
    new Gauge({
      name: 'pgvpd_pool_keys',
      help: 'Pools, one per (server, database, role)',
      registers: poolRegisters,
      collect() {
        this.set(sources().pool?.().keys.length ?? 0);
      },
    });
    this.poolCheckouts = new Histogram({
      name: 'pgvpd_pool_checkout_duration_seconds',
      help: 'Wait for a pooled session, from asking to getting one (or failing)',
      buckets: waitBuckets,
      registers: poolRegisters,
    });
    this.poolTimeouts = new Counter({
      name: 'pgvpd_pool_checkout_timeouts_total',
      help: 'Checkouts that timed out (53300 to the client)',
      registers: poolRegisters,
    });
    this.poolOpened = new Counter({
      name: 'pgvpd_pool_sessions_opened_total',
      help: 'Pooled upstream sessions opened',
      registers: poolRegisters,
    });
    this.poolClosed = new Counter({
      name: 'pgvpd_pool_sessions_closed_total',
      help: 'Pooled upstream sessions closed, by reason',
      labelNames: ['reason'],
      registers: poolRegisters,
    });
    this.poolTransactions = new Counter({
      name: 'pgvpd_pool_transactions_total',
      help: 'Transactions served by transaction pooling, each on a backend linked for it',
      registers: poolRegisters,
    });
    this.poolOwnerSwitches = new Counter({
      name: 'pgvpd_pool_owner_switches_total',
      help: "Contexts switched in on a pooled backend: without a reset (switch), or on an owner change, after the old owner's session state was reset (reset)",
      labelNames: ['kind'],
      registers: poolRegisters,
    });
    this.poolReadying = new Histogram({
      name: 'pgvpd_pool_readying_seconds',
      help: 'Readying a pooled backend for its client (context and settings), by what it took',
      labelNames: ['kind'],
      buckets: readyingBuckets,
      registers: poolRegisters,
    });
    this.instanceRegistrations = new Counter({
      name: 'pgvpd_instance_registrations_total',
      help: 'Registrations of this proxy as an instance in a database (its switch-grant key), by result',
      labelNames: ['result'],
      registers: poolRegisters,
    });
    // Every series of a fixed set from the start, so that rates and ratios have both sides.
    this.poolTransactions.inc(0);
    for (const kind of ['switch', 'reset'] as const) this.poolOwnerSwitches.inc({ kind }, 0);
    for (const kind of readyingKinds) this.poolReadying.zero({ kind });
    for (const result of ['ok', 'error'] as const) this.instanceRegistrations.inc({ result }, 0);

    // The control plane's own traffic.
    this.httpRequests = new Counter({
      name: 'pgvpd_http_requests_total',
      help: 'HTTP requests answered by the admin server, by route pattern, method and status class',
      labelNames: ['route', 'method', 'code'],
      registers,
    });
    this.httpDurations = new Histogram({
      name: 'pgvpd_http_request_duration_seconds',
      help: 'HTTP request latency, by route pattern',
      labelNames: ['route'],
      buckets: shortBuckets,
      registers,
    });
    this.httpLimited = new Counter({
      name: 'pgvpd_http_rate_limited_total',
      help: 'HTTP requests refused with 429 by the rate limiter, by route pattern',
      labelNames: ['route'],
      registers,
    });
    this.apiAuthFailures = new Counter({
      name: 'pgvpd_api_auth_failures_total',
      help: 'API requests refused for their token: invalid_token (401) or forbidden (403)',
      labelNames: ['reason'],
      registers,
    });
    this.inviteRedeems = new Counter({
      name: 'pgvpd_invite_redeems_total',
      help: 'Invite redemptions, by outcome',
      labelNames: ['outcome'],
      registers,
    });
  }

  /** Where the scrape-time gauges read from (the runtime's sessions, org mode's pool). */
  observe(sources: MetricsSources): void {
    this.sources = sources;
  }

  /** The process's default metrics, then this runtime's, in Prometheus' text format (contentType). */
  async render(): Promise<string> {
    const [process, own] = await Promise.all([this.process.metrics(), this.registry.metrics()]);
    return `${process.endsWith('\n') ? process : `${process}\n`}${own}`;
  }

  // --- The admin server ---------------------------------------------------------------------

  /**
   * One answered HTTP request. `route` is the matched route's pattern (`/api/v1/orgs/:id`),
   * never the request's path; `unmatched` for a request no route matched. Methods outside
   * HTTP's usual ones are `other`; the status is recorded by class (2xx … 5xx).
   */
  httpRequest(route: string, method: string, status: number, seconds: number): void {
    const upper = method.toUpperCase();
    this.httpRequests.inc({
      route,
      method: httpMethods.has(upper) ? upper : 'other',
      code: statusClass(status),
    });
    this.httpDurations.observe({ route }, seconds);
  }

  /** A request refused with 429 (`route` as in httpRequest). */
  httpRateLimited(route: string): void {
    this.httpLimited.inc({ route });
  }

  /** A 401 (invalid_token) or 403 (forbidden) for the request's token. */
  apiAuthFailure(reason: ApiAuthFailureReason): void {
    this.apiAuthFailures.inc({ reason });
  }

  inviteRedeem(outcome: InviteRedeemOutcome): void {
    this.inviteRedeems.inc({ outcome });
  }

  /** Whether the control connection answered its last use or check. */
  controlUp(up: boolean): void {
    this.controlConnectionUp.set(up ? 1 : 0);
  }

  // --- The proxy ------------------------------------------------------------------------------

  /** A client connection accepted. */
  clientConnected(): void {
    this.connections.inc({ mode: this.mode });
  }

  /** A handshake ended: at the first ReadyForQuery (ok) or in failure (error). */
  handshakeEnded(outcome: HandshakeOutcome, seconds: number): void {
    this.handshakes.observe({ mode: this.mode, outcome }, seconds);
  }

  /** A client connection closed, after `seconds`, having read and written these bytes. */
  sessionClosed(seconds: number, bytesRead: number, bytesWritten: number): void {
    this.sessionDurations.observe({ mode: this.mode }, seconds);
    this.receivedBytes.inc({ mode: this.mode }, bytesRead);
    this.sentBytes.inc({ mode: this.mode }, bytesWritten);
  }

  /** A FATAL the proxy sent a client; SQLSTATEs outside proxySqlstates are `other`. */
  clientError(sqlstate: string): void {
    this.clientErrors.inc({
      mode: this.mode,
      sqlstate: proxySqlstates.has(sqlstate) ? sqlstate : 'other',
    });
  }

  /**
   * A handshake refused with `code` (undefined: none was sent) for a failure of `kind`
   * (ProxyError's kind; `relayed` for the upstream's own refusal, `internal` for XX000): the
   * FATAL, and the auth failure or TLS failure it stands for.
   */
  refused(code: string | undefined, kind: string): void {
    if (code !== undefined) this.clientError(code);
    const reason =
      kind === 'relayed' ? (code === '28P01' ? 'password' : undefined) : authFailureKinds.get(kind);
    if (reason !== undefined) this.authFailure(reason);
    if (kind === 'upstream_tls') this.tlsHandshakeFailed('upstream');
  }

  authFailure(reason: AuthFailureReason): void {
    this.authFailures.inc({ mode: this.mode, reason });
  }

  /** A failed login whose answer the login throttle held back. */
  authThrottledAnswer(): void {
    this.authThrottled.inc();
  }

  /** One issue_context round trip over the control connection. */
  contextIssued(seconds: number): void {
    this.contextIssue.observe(seconds);
  }

  /** A catalog snapshot load, and on success what the snapshot holds. */
  catalogReload(
    outcome: 'ok' | 'error',
    loaded?: { at: number; active: number; suspended: number; users: number },
  ): void {
    this.catalogReloads.inc({ outcome });
    if (!loaded) return;
    this.catalogLastReload.set(loaded.at / 1000);
    this.catalogOrgs.set({ status: 'active' }, loaded.active);
    this.catalogOrgs.set({ status: 'suspended' }, loaded.suspended);
    this.catalogUsers.set(loaded.users);
  }

  /** A checkout settled after `seconds` (with a session or a failure). */
  poolCheckout(seconds: number): void {
    this.poolCheckouts.observe(seconds);
  }

  /** A checkout timed out in the queue (53300). */
  poolCheckoutTimeout(): void {
    this.poolTimeouts.inc();
  }

  poolSessionOpened(): void {
    this.poolOpened.inc();
  }

  poolSessionClosed(reason: PoolCloseReason): void {
    this.poolClosed.inc({ reason });
  }

  /** A transaction-mode client's transaction got a backend, readied (one per link). */
  poolTransaction(): void {
    this.poolTransactions.inc();
  }

  /**
   * A pooled backend readied for a client in `seconds` (readyingKind() of readyFor's result);
   * `switch` and `reset` also count as owner switches. A readying that failed is not recorded
   * here (its backend is closed as broken).
   */
  poolReadied(kind: ReadyingKind, seconds: number): void {
    this.poolReadying.observe({ kind }, seconds);
    if (kind === 'switch' || kind === 'reset') this.poolOwnerSwitches.inc({ kind });
  }

  /** A registration of this proxy in a database (pgvpd.register_instance) succeeded or failed. */
  instanceRegistration(result: InstanceRegistrationResult): void {
    this.instanceRegistrations.inc({ result });
  }

  cancelRequest(outcome: CancelOutcome): void {
    this.cancels.inc({ outcome });
  }

  tlsHandshakeFailed(side: TlsSide): void {
    this.tlsFailures.inc({ side });
  }

  /** The proxy started (true) draining for shutdown. */
  draining(on: boolean): void {
    this.drainingGauge.set(on ? 1 : 0);
  }
}

function statusClass(status: number): '2xx' | '3xx' | '4xx' | '5xx' {
  if (status >= 500) return '5xx';
  if (status >= 400) return '4xx';
  if (status >= 300) return '3xx';
  return '2xx';
}
