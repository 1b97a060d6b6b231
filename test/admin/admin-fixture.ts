// An org-mode proxy with the HTTP control plane on (admin_port 0, on 127.0.0.1), in front of the
// org fixture's database (orgs acme-analytics and beta-db, alice in each). Its control login is
// also the API login: a member of pgvpd_proxy and of pgvpd_api. Tokens are made in SQL as the
// superuser, as `pgvpd token create` would; requests go over a real socket with fetch.
import type { FastifyInstance } from 'fastify';
import { AdminDatabase } from '../../proxy/admin/database.js';
import { Readiness } from '../../proxy/admin/readiness.js';
import { buildServer, type Surface } from '../../proxy/admin/server.js';
import type { ConfigKey } from '../../proxy/config.js';
import { createLogger, type Logger } from '../../proxy/logger.js';
import { orgFixture, type OrgFixture } from '../proxy/org-fixture.js';
import type { TestLike } from '../support/postgres.js';

export type Scope = 'operator' | 'org' | 'metrics';

export interface HttpAnswer {
  status: number;
  headers: Headers;
  /** The raw body. */
  text: string;
  /** The body parsed as JSON (undefined when it is not JSON). */
  json: unknown;
}

export interface AdminFixture extends OrgFixture {
  /** The admin listener's origin, e.g. http://127.0.0.1:40123. */
  base: string;
  /** A new API token of the scope (org: bound to `org`). */
  token(scope: Scope, org?: string): Promise<string>;
  /** A request to the admin listener. */
  http(path: string, init?: HttpInit): Promise<HttpAnswer>;
}

export interface HttpInit {
  method?: string;
  token?: string;
  /** Sent as JSON with content-type application/json. */
  json?: unknown;
  headers?: Record<string, string>;
  body?: string;
}

/** A request to `base + path`; the answer read whole. */
export async function request(
  base: string,
  path: string,
  init: HttpInit = {},
): Promise<HttpAnswer> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
  let body = init.body;
  if (init.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(init.json);
  }
  const response = await fetch(base + path, { method: init.method ?? 'GET', headers, body });
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

/** A logger whose lines are kept in `lines` (JSON text, one per entry). */
export function capturingLogger(level: 'debug' | 'info' = 'debug'): {
  logger: Logger;
  lines: string[];
} {
  const lines: string[] = [];
  const logger = createLogger(level, {
    write: (line: string) => {
      lines.push(line);
    },
  });
  return { logger, lines };
}

export async function adminFixture(
  t: TestLike,
  overrides: Partial<Record<ConfigKey, unknown>> = {},
  opts: { logger?: Logger } = {},
): Promise<AdminFixture> {
  const f = await orgFixture(t, { admin_port: 0, ...overrides }, opts);
  await f.db.query(`grant pgvpd_api to ${f.proxyRole.name}`);
  const base = f.proxy.adminUrl;
  if (base === undefined) throw new Error('the admin server did not start');
  return {
    ...f,
    base,
    async token(scope, org) {
      const { rows } = await f.db.query<{ token: string }>(
        'select token from pgvpd.token_create($1, $2)',
        [scope, org ?? null],
      );
      return rows[0]!.token;
    },
    http: (path, init) => request(base, path, init),
  };
}

/**
 * A second Fastify instance of the control plane on the fixture's runtime and database, not
 * listening, for `inject()` (which can set the client address). Closed at teardown.
 */
export async function injectableServer(
  t: TestLike,
  f: AdminFixture,
  surface: Surface = 'admin',
): Promise<FastifyInstance> {
  const logger = createLogger('silent');
  const db = new AdminDatabase(f.proxyRole.url, logger);
  const app = await buildServer(
    {
      runtime: f.proxy.runtime,
      db,
      readiness: new Readiness(f.proxy.runtime, db, f.proxy.runtime.metrics, logger),
      publicUrl: () => 'http://127.0.0.1',
      connect: { host: '127.0.0.1', port: f.proxy.port, sslmode: 'prefer' },
      setupFiles: { html: undefined, js: undefined, css: undefined },
    },
    surface,
    logger,
  );
  t.teardown(async () => {
    await app.close();
    await db.close();
  });
  return app;
}
