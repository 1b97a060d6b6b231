// GET /metrics: the proxy's Prometheus metrics (proxy/metrics.ts), for a token of scope metrics
// or operator.
import type { FastifyInstance } from 'fastify';
import type { AdminContext } from '../context.js';

export function metricsRoutes(app: FastifyInstance, ctx: AdminContext): void {
  const { metrics } = ctx.runtime;
  app.get('/metrics', { config: { auth: 'metrics', quietLog: true } }, async (_request, reply) => {
    const text = await metrics.render();
    return reply.type(metrics.contentType).send(text);
  });
}
