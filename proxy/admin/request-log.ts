// One log line per answered request, and its metrics: below 400 at info (debug for the routes
// that declare `config.quietLog`: health checks and scrapes), 4xx at warn, 5xx at error. The
// line carries the method, the route's pattern (never the raw URL, so never a query string),
// the status, the milliseconds, the client address, the token's id and the request id. It never
// carries a body, a header, a token, an invite or a verifier.
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Successful answers are logged at debug (probes and scrapes). */
    quietLog?: boolean;
  }
}

export function logRequests(
  app: FastifyInstance,
  log: Logger,
  metrics: Pick<Metrics, 'httpRequest'>,
): void {
  app.addHook('onResponse', async (request, reply) => {
    const status = reply.statusCode;
    const route = request.routeOptions.url ?? 'unmatched';
    const ms = reply.elapsedTime;
    metrics.httpRequest(route, request.method, status, ms / 1000);
    const level =
      status >= 500
        ? 'error'
        : status >= 400
          ? 'warn'
          : request.routeOptions.config.quietLog === true
            ? 'debug'
            : 'info';
    log[level](
      {
        event: 'http',
        method: request.method,
        route,
        status,
        ms: Math.round(ms * 10) / 10,
        ip: request.ip,
        token_id: request.tokenId,
        req_id: request.id,
      },
      'http request',
    );
  });
}
