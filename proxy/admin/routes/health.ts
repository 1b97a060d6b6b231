// GET /healthz (liveness: the process answers; never touches the database) and GET /readyz
// (readiness.ts: 200 ready, 503 not_ready or draining). Both public, unlimited, logged at debug
// when they succeed.
import type { FastifyInstance } from 'fastify';
import type { AdminContext } from '../context.js';

export function healthRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.get('/healthz', { config: { auth: 'public', quietLog: true } }, () => ({ status: 'ok' }));
  app.get('/readyz', { config: { auth: 'public', quietLog: true } }, async (_request, reply) => {
    const report = ctx.readiness.report();
    return reply.code(report.status === 'ready' ? 200 : 503).send(report);
  });
}
