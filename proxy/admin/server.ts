// Builds one Fastify instance of the control plane: the admin surface (every route) or the
// public surface (health, validate, invites info/redeem, /setup). What every instance
// guarantees, whatever its routes:
// - limits: 16 KiB bodies, 10 s idle per connection and 10 s for a whole request (408), 5 s
//   keep-alive, 256 connections per listener, path parameters of at most 100 characters; JSON
//   is the only body parser (a POST with a body schema answers 415 for any other type, before
//   the body is read);
// - every route has an auth class (auth.ts) and, before it is checked, its rate limit
//   (rate-limits.ts); no route is reached through a path string comparison;
// - every answer carries Cache-Control: no-store, X-Content-Type-Options: nosniff and
//   Referrer-Policy: no-referrer, and no CORS header and no cookie;
// - every failure is `{"error","message"}` through one error handler (sql-errors.ts for the
//   database's), a 500 says only "internal error" with the request id, whose cause is logged;
// - one log line per request (request-log.ts), through a child of the proxy's logger, with
//   Fastify's own request logging off.
import { randomUUID } from 'node:crypto';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type onRequestAsyncHookHandler,
} from 'fastify';
import type { Logger } from '../logger.js';
import { ApiError, apiErrors } from './api-error.js';
import { authenticator, requireAuthClasses } from './auth.js';
import type { AdminContext } from './context.js';
import { limiters, RateLimitCounters } from './rate-limits.js';
import { logRequests } from './request-log.js';
import { healthRoutes } from './routes/health.js';
import { inviteRoutes } from './routes/invites.js';
import { metricsRoutes } from './routes/metrics.js';
import { orgRoutes } from './routes/orgs.js';
import { publicRoutes } from './routes/public.js';
import { setupRoutes } from './routes/setup.js';
import { statusRoutes } from './routes/status.js';
import { userRoutes } from './routes/users.js';
import { apiErrorOf } from './sql-errors.js';

export type Surface = 'admin' | 'public';

/** Open connections per listener; beyond them Node closes a new connection at once. */
export const maxConnections = 256;

/** On every answer. */
const fixedHeaders = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
} as const;

/** A POST or PUT with a body schema takes application/json only. */
const requireJson: onRequestAsyncHookHandler = (request) => {
  const type = request.headers['content-type']?.split(';')[0]?.trim().toLowerCase();
  return type === 'application/json'
    ? Promise.resolve()
    : Promise.reject(apiErrors.unsupportedMediaType());
};

/** What a failed request is told; undefined: an internal error. */
function clientErrorOf(error: FastifyError | Error): ApiError | undefined {
  const mapped = apiErrorOf(error);
  if (mapped !== undefined) return mapped;
  const fastifyError = error as Partial<FastifyError>;
  if (fastifyError.validation !== undefined) return apiErrors.invalid(error.message);
  const status = fastifyError.statusCode;
  if (status === 415) return apiErrors.unsupportedMediaType();
  if (status === 404) return apiErrors.notFound();
  if (status !== undefined && status >= 400 && status < 500) {
    return new ApiError(status, 'invalid', error.message);
  }
  return undefined;
}

function asArray<T>(hooks: T | T[] | undefined): T[] {
  if (hooks === undefined) return [];
  return Array.isArray(hooks) ? hooks : [hooks];
}

export async function buildServer(
  ctx: AdminContext,
  surface: Surface,
  log: Logger,
): Promise<FastifyInstance> {
  const { metrics } = ctx.runtime;
  const loggerInstance: FastifyBaseLogger = log;
  const app = Fastify({
    loggerInstance,
    logController: new LogController({ disableRequestLogging: true }),
    // The client address (request.ip: rate limits, logs) is X-Forwarded-For's only when the
    // connecting peer is one of admin_trust_proxy; otherwise the socket's.
    trustProxy:
      ctx.runtime.config.admin_trust_proxy.length > 0
        ? [...ctx.runtime.config.admin_trust_proxy]
        : false,
    bodyLimit: 16 * 1024,
    connectionTimeout: 10_000,
    // A whole request (headers and body) within 10 s, however slowly it trickles in: 408 and the
    // connection closed (connectionTimeout above is only an idle timeout). Node checks every
    // second; its headersTimeout must not exceed requestTimeout.
    requestTimeout: 10_000,
    http: { headersTimeout: 10_000, requestTimeout: 10_000, connectionsCheckingInterval: 1_000 },
    keepAliveTimeout: 5_000,
    routerOptions: { maxParamLength: 100 },
    exposeHeadRoutes: false,
    genReqId: () => randomUUID(),
    return503OnClosing: true,
    // A path the router cannot take (a parameter over 100 characters, bad percent-encoding):
    // the usual headers and body, without the path echoed back.
    frameworkErrors: (error, _request, frameworkReply) => {
      const reply: FastifyReply = frameworkReply;
      const answer =
        error.code === 'FST_ERR_BAD_URL'
          ? apiErrors.invalid('malformed URL')
          : apiErrors.notFound();
      void reply
        .code(answer.status)
        .headers({ ...answer.headers, ...fixedHeaders })
        .send(answer.body());
    },
  });
  app.server.maxConnections = maxConnections;
  requireAuthClasses(app);
  const limits = await limiters(
    app,
    ctx.runtime.config,
    metrics,
    ctx.rateLimits ?? new RateLimitCounters(),
  );
  const authenticate = authenticator(ctx.db, metrics);
  // Each route's onRequest: its rate limit, then its auth class, then the JSON-only rule.
  app.addHook('onRoute', (route) => {
    const limit =
      route.config?.auth === 'public'
        ? route.config.limit === undefined
          ? undefined
          : limits[route.config.limit]
        : limits.api;
    route.onRequest = [
      ...asArray(route.onRequest),
      ...(limit === undefined ? [] : [limit]),
      authenticate,
      ...(route.schema?.body === undefined ? [] : [requireJson]),
    ];
  });
  app.removeContentTypeParser('text/plain');
  app.addHook('onSend', async (_request, reply, payload) => {
    reply.headers(fixedHeaders);
    return payload;
  });
  logRequests(app, log, metrics);
  app.setNotFoundHandler((_request, reply) => {
    const error = apiErrors.notFound();
    return reply.code(error.status).send(error.body());
  });
  app.setErrorHandler((error: FastifyError | Error, request, reply) => {
    let answer = clientErrorOf(error);
    if (answer === undefined) {
      answer = apiErrors.internal(request.id);
      log.error(
        {
          event: 'http_error',
          req_id: request.id,
          route: request.routeOptions.url ?? 'unmatched',
          code: (error as { code?: unknown }).code,
          err: error.message,
        },
        'internal error answering an HTTP request',
      );
    }
    return reply.code(answer.status).headers(answer.headers).send(answer.body());
  });

  healthRoutes(app, ctx);
  publicRoutes(app, ctx);
  setupRoutes(app, ctx);
  if (surface === 'admin') {
    metricsRoutes(app, ctx);
    statusRoutes(app, ctx);
    orgRoutes(app, ctx);
    userRoutes(app, ctx);
    inviteRoutes(app, ctx);
  }
  return app;
}
