// GET /api/v1/status (operator): what the runtime record says now: version, mode, uptime,
// whether the proxy is draining, sessions by phase, pool totals and per key, the catalog.
// Names of orgs, users and databases appear only as pool keys, for operators.
import type { FastifyInstance } from 'fastify';
import { packageVersion } from '../../package-root.js';
import type { AdminContext } from '../context.js';

export function statusRoutes(app: FastifyInstance, ctx: AdminContext): void {
  const { runtime, readiness } = ctx;
  app.get('/api/v1/status', { config: { auth: 'operator' } }, () => {
    const byPhase: Record<string, number> = {};
    const sessions = runtime.describeSessions();
    for (const session of sessions) byPhase[session.phase] = (byPhase[session.phase] ?? 0) + 1;
    const catalog = runtime.org?.catalog.status();
    return {
      version: packageVersion,
      mode: runtime.config.mode,
      uptime_s: Math.floor((Date.now() - runtime.startedAt) / 1000),
      draining: readiness.isDraining,
      sessions: { total: sessions.length, by_phase: byPhase },
      pool: runtime.org?.pool.stats() ?? null,
      catalog:
        catalog === undefined
          ? null
          : {
              connected: catalog.connected,
              loaded_at:
                catalog.loadedAt === undefined ? null : new Date(catalog.loadedAt).toISOString(),
              orgs: catalog.orgs,
              users: catalog.users,
            },
    };
  });
}
