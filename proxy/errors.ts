// Every way a handshake can fail, each with its SQLSTATE, the message the client reads and the
// message the log gets (the same unless the client must learn less than the operator).
// The session turns any of these into a FATAL ErrorResponse and closes; nothing is silent.

export class ProxyError extends Error {
  override name = 'ProxyError';
  constructor(
    /** Short stable name for logs and metrics. */
    readonly kind: string,
    /** SQLSTATE sent to the client. */
    readonly code: string,
    message: string,
    readonly hint?: string,
    /** What the operator's log says, when it should say more than the client is told. */
    readonly logMessage: string = message,
  ) {
    super(message);
  }
}

export const proxyErrors = {
  protocolViolation: (detail: string) => new ProxyError('protocol_violation', '08P01', detail),
  plaintextAfterSslRequest: () =>
    new ProxyError(
      'plaintext_after_ssl_request',
      '08P01',
      'received unencrypted data after SSL request',
      undefined,
      'client sent bytes after SSLRequest before the TLS handshake (possible injection); dropped',
    ),
  noUser: () =>
    new ProxyError('no_user', '28000', 'no PostgreSQL user name specified in startup packet'),
  badUsername: (username: string, problem: string, expected: string) =>
    new ProxyError(
      'bad_username',
      '28000',
      `invalid pgvpd username ${JSON.stringify(username)}: ${problem}`,
      expected,
    ),
  bypassNotFromHere: (username: string, address: string) =>
    new ProxyError(
      'bypass_refused',
      '28000',
      `user ${JSON.stringify(username)} may not bypass the tenant from this address`,
      'Bypass users are served only from the client networks in bypass_networks.',
      `bypass user ${JSON.stringify(username)} refused: ${address} is not in bypass_networks`,
    ),
  unsupportedAuth: (method: string) =>
    new ProxyError(
      'unsupported_auth',
      '28000',
      `upstream asked for ${method} authentication, which pgvpd cannot relay`,
      'Use scram-sha-256, md5 or password in the upstream pg_hba.conf.',
    ),
  passwordNeedsTls: (method: string) =>
    new ProxyError(
      'password_needs_tls',
      '28000',
      `upstream asked for ${method}, which pgvpd answers with your password; connect with TLS (sslmode=require) so it does not travel in the clear`,
      'Or set allow_password_without_tls on a trusted network, or switch the role to scram-sha-256.',
    ),
  upstreamUnreachable: (host: string, port: number, reason: string) =>
    new ProxyError(
      'upstream_unreachable',
      '08006',
      `could not connect to upstream server ${host}:${String(port)}: ${reason}`,
    ),
  upstreamTls: (host: string, port: number, reason: string) =>
    new ProxyError(
      'upstream_tls',
      '08006',
      `TLS with upstream server ${host}:${String(port)} failed: ${reason}`,
    ),
  upstreamClosed: (phase: string) =>
    new ProxyError(
      'upstream_closed',
      '08006',
      `upstream server closed the connection during ${phase}`,
    ),
  upstreamProtocol: (detail: string) =>
    new ProxyError(
      'upstream_protocol',
      '08P01',
      `unexpected message from upstream server: ${detail}`,
    ),
  handshakeTimeout: (phase: string, seconds: number) =>
    new ProxyError(
      'handshake_timeout',
      '08006',
      `handshake timed out during ${phase} after ${String(seconds)} s`,
      'Raise handshake_timeout if the upstream is slow to authenticate.',
    ),
  contextFailed: (code: string | undefined, reason: string) =>
    new ProxyError(
      'context_failed',
      code ?? '08006',
      'could not establish the tenant context for this session',
      undefined,
      `could not establish the tenant context: ${reason}`,
    ),
  appRoleNeedsScram: (role: string, problem: 'md5' | 'no password') =>
    new ProxyError(
      'app_role_needs_scram',
      '28000',
      problem === 'md5'
        ? `role "${role}" has an MD5 password; pgvpd's pooled app mode checks SCRAM-SHA-256 passwords only`
        : `role "${role}" has no password; pgvpd's pooled app mode checks SCRAM-SHA-256 passwords only`,
      `Set the role's password again with password_encryption = 'scram-sha-256' (the default since PostgreSQL 14): ALTER ROLE ${role} PASSWORD '...';`,
    ),
  lookupFailed: (code: string | undefined, reason: string) =>
    new ProxyError(
      'verifier_lookup_failed',
      code !== undefined && /^(08|57P|53)/.test(code) ? code : '08006',
      'could not look up the role for this session',
      undefined,
      `pooled app mode: the verifier lookup failed: ${reason}`,
    ),
  unknownDatabase: (database: string) =>
    new ProxyError('unknown_database', '3D000', `database "${database}" does not exist`),
  orgSuspended: (database: string) =>
    new ProxyError(
      'org_suspended',
      '28000',
      `the organization of database "${database}" is suspended`,
      "Ask the organization's administrator to resume it.",
    ),
  tooManyUnauthenticated: (host: string, max: number) =>
    new ProxyError(
      'too_many_unauthenticated',
      '53300',
      `too many connections from host "${host}" that have not authenticated yet`,
      `At most ${String(max)} connections from one host may be logging in at a time.`,
    ),
  shuttingDown: () =>
    new ProxyError(
      'shutting_down',
      '57P01',
      'terminating connection because the pgvpd proxy is shutting down',
    ),
} as const;

/**
 * Why `pgvpd serve` could not start, one kind per cause, each message naming what failed and
 * the setting that leads to it.
 */
export class StartupError extends Error {
  override name = 'StartupError';
  constructor(
    readonly kind: 'tls' | 'upstream_tls_ca' | 'passfile' | 'catalog' | 'listen',
    message: string,
  ) {
    super(message);
  }
}

const reasonOf = (error: unknown): string =>
  error instanceof Error ? error.message : String(error);

export const startupErrors = {
  tls: (cert: string, key: string, error: unknown) =>
    new StartupError(
      'tls',
      `cannot load the client TLS certificate (tls_cert ${cert}, tls_key ${key}): ${reasonOf(error)}`,
    ),
  upstreamTlsCa: (path: string, error: unknown) =>
    new StartupError('upstream_tls_ca', `cannot read upstream_tls_ca ${path}: ${reasonOf(error)}`),
  passfile: (error: unknown) =>
    new StartupError('passfile', `cannot read the connect_as passwords: ${reasonOf(error)}`),
  catalog: (error: unknown) =>
    new StartupError(
      'catalog',
      `cannot load the org catalog over control_url (a pgvpd_proxy member must be able to call pgvpd.catalog_snapshot()): ${reasonOf(error)}`,
    ),
  listen: (host: string, port: number, error: unknown) =>
    new StartupError('listen', `cannot listen on ${host}:${String(port)}: ${reasonOf(error)}`),
  /** The HTTP control plane's listener (admin_host, admin_port). */
  adminListen: (host: string, port: number, error: unknown) =>
    new StartupError(
      'listen',
      `cannot listen for the HTTP control plane (admin_host, admin_port) on ${host}:${String(port)}: ${reasonOf(error)}`,
    ),
  /** The public HTTP listener (public_host, public_port). */
  publicListen: (host: string, port: number, error: unknown) =>
    new StartupError(
      'listen',
      `cannot listen for the public HTTP routes (public_host, public_port) on ${host}:${String(port)}: ${reasonOf(error)}`,
    ),
} as const;
