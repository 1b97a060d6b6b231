// How many context switches a run made, and what one costs on the backend, for bench/org.mjs.
//   - pgvpd.switch_context (PL/pgSQL) calls and times from pg_stat_user_functions, which needs
//     track_functions = 'pl' on the cluster. Every switch the proxy makes is one call: the first
//     context of a backend, an owner change, a restore after a session-mode release.
//     PostgreSQL 15 backends flush their function statistics at most once a second while busy and
//     an idle one 10 s (PGSTAT_IDLE_INTERVAL) after its last flush, so a reading is complete only
//     STATS_SETTLE_MS after the run's last call (the caller waits).
//   - pgvpd_pool_owner_switches_total from the proxy's GET /metrics (admin port and a metrics
//     token), summed over its labels: owner changes only. Null when the proxy does not export
//     the metric (a build before it) or has no admin port.

/** How long after a run pg_stat_user_functions has every backend's calls (10 s idle flush + 1 s). */
export const STATS_SETTLE_MS = 11_000;

/** Cumulative switch_context calls and times (ms) in the connected database. */
export async function switchContextStats(db) {
  const r = await db.query(
    `select coalesce(sum(calls), 0)::bigint as calls,
            coalesce(sum(total_time), 0)::float8 as total_ms,
            coalesce(sum(self_time), 0)::float8 as self_ms
       from pg_catalog.pg_stat_user_functions
      where schemaname = 'pgvpd' and funcname = 'switch_context'`,
  );
  const row = r.rows[0];
  return { calls: Number(row.calls), totalMs: row.total_ms, selfMs: row.self_ms };
}

/** The difference of two switchContextStats readings. */
export function switchContextDelta(before, after) {
  return {
    calls: after.calls - before.calls,
    totalMs: after.totalMs - before.totalMs,
    selfMs: after.selfMs - before.selfMs,
  };
}

/** pgvpd_pool_owner_switches_total summed over its labels, or null when not exported. */
export async function ownerSwitches(adminPort, token) {
  if (!adminPort) return null;
  const res = await fetch(`http://127.0.0.1:${adminPort}/metrics`, {
    headers: { authorization: `Bearer ${token}` },
  });
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`);
  const text = await res.text();
  let found = false;
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = line.match(/^pgvpd_pool_owner_switches_total(?:\{[^}]*\})?\s+(\S+)/);
    if (!m) continue;
    found = true;
    sum += Number(m[1]);
  }
  return found ? sum : null;
}
