// Who may call a route. Every route declares its class in `config.auth` (public, metrics, org,
// operator); a route without one stops the server at start (the onRoute hook throws). The class
// is read from the matched route, never from the request's path, so no spelling of a path can
// reach a route under another class. The token comes from `Authorization: Bearer` only and is
// checked in SQL by pgvpd.api_authorize (nothing is cached: a revoked token fails on the very
// next request). A missing, unknown, malformed, revoked or expired token gets one 401 body; a
// token of another scope or org gets one 403 body, before anything about the org is looked up.
import type { FastifyInstance, FastifyRequest, onRequestAsyncHookHandler } from 'fastify';
import type { Metrics } from '../metrics.js';
import { apiErrors } from './api-error.js';
import type { AdminDatabase } from './database.js';
import { apiErrorOf } from './sql-errors.js';

export const authClasses = ['public', 'metrics', 'org', 'operator'] as const;
export type AuthClass = (typeof authClasses)[number];

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route (auth.ts). Required on every route. */
    auth?: AuthClass;
  }
  interface FastifyRequest {
    /** The request's API token once api_authorize accepted it; never logged. */
    apiToken: string | undefined;
    /** The accepted token's id (for logs). */
    tokenId: string | undefined;
  }
}

const bearer = /^Bearer +([!-~]{1,200})$/i;
const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function isAuthClass(value: unknown): value is AuthClass {
  return (authClasses as readonly unknown[]).includes(value);
}

/** The token of `Authorization: Bearer <token>`, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  return bearer.exec(header)?.[1];
}

/** The route's `:id`, when it is a uuid (an org class check names no org otherwise). */
function orgOf(request: FastifyRequest): string | null {
  const id = (request.params as Record<string, unknown> | undefined)?.id;
  return typeof id === 'string' && uuid.test(id) ? id : null;
}

/** The route's class; the onRoute hook guarantees every route has one. */
export function authClassOf(request: FastifyRequest): AuthClass | undefined {
  const auth = request.routeOptions.config.auth;
  return isAuthClass(auth) ? auth : undefined;
}

/**
 * The onRequest check of one route's class. Added to each route by `requireAuthClasses`, after
 * the route's rate limit, so that guessing tokens is limited too.
 */
export function authenticator(
  db: AdminDatabase,
  metrics: Pick<Metrics, 'apiAuthFailure'>,
): onRequestAsyncHookHandler {
  return async (request) => {
    const auth = authClassOf(request);
    if (auth === 'public') return;
    const token = bearerToken(request.headers.authorization);
    if (auth === undefined || token === undefined) {
      metrics.apiAuthFailure('invalid_token');
      throw apiErrors.unauthorized();
    }
    try {
      const rows = await db.rows<{ id: string }>('select pgvpd.api_authorize($1, $2, $3) as id', [
        token,
        auth,
        auth === 'org' ? orgOf(request) : null,
      ]);
      request.tokenId = rows[0]?.id;
      request.apiToken = token;
    } catch (error) {
      const mapped = apiErrorOf(error);
      if (mapped?.status === 401) {
        metrics.apiAuthFailure('invalid_token');
        throw apiErrors.unauthorized();
      }
      if (mapped?.status === 403) {
        metrics.apiAuthFailure('forbidden');
        throw apiErrors.forbidden();
      }
      throw error;
    }
  };
}

/**
 * Makes every route declare its class: a route registered without one throws here, so the
 * server does not start. Must be called before any route is registered.
 */
export function requireAuthClasses(app: FastifyInstance): void {
  app.decorateRequest('apiToken', undefined);
  app.decorateRequest('tokenId', undefined);
  app.addHook('onRoute', (route) => {
    if (!isAuthClass(route.config?.auth)) {
      throw new Error(
        `route ${String(route.method)} ${route.url} declares no auth class (config.auth: ${authClasses.join(', ')})`,
      );
    }
  });
}
