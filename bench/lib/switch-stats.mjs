// How many context switches a run made, and what one costs on the backend, for bench/org.mjs.
//   - pgvpd.switch_context (PL/pgSQL) calls and times from pg_stat_user_functions, which needs
//     track_functions = 'pl' on the cluster. Every switch the proxy makes is one call: the first
//     context of a backend, an owner change, a restore after a session-mode release.
//     PostgreSQL 15 backends flush their function statistics at most once a second while busy and
//     an idle one 10 s (PGSTAT_IDLE_INTERVAL) after its last flush, so a reading is complete only
//     STATS_SETTLE_MS after the run's last call (the caller waits).
//   - pgvpd_pool_owner_switches_total and pgvpd_pool_readying_seconds from the proxy's GET
//     /metrics (admin port and a metrics token), by their `kind` label: owner changes (reset),
//     contexts switched in, and how long readying a backend for a new owner took. Null when the
//     proxy does not export them (a build before them) or has no admin port.

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

/**
 * The pool's counters from the proxy's GET /metrics, or null without an admin port:
 *   switches  pgvpd_pool_owner_switches_total by its `kind` label (switch: a context set on a
 *             backend holding none; reset: an owner change, the old owner's state reset first),
 *             null when the proxy does not export it
 *   readying  pgvpd_pool_readying_seconds' _sum and _count by `kind` (none, settings, switch,
 *             reset): how long the proxy waited for each readying of a backend, wall clock
 */
export async function poolMetrics(adminPort, token) {
  if (!adminPort) return null;
  const res = await fetch(`http://127.0.0.1:${adminPort}/metrics`, {
    headers: { authorization: `Bearer ${token}` },
  });
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`);
  const text = await res.text();
  let switches = null;
  const readying = {};
  for (const line of text.split('\n')) {
    const m = line.match(/^(pgvpd_pool_\w+)(?:\{([^}]*)\})?\s+(\S+)/);
    if (!m) continue;
    const [, name, labels = '', value] = m;
    const kind = labels.match(/kind="([^"]*)"/)?.[1] ?? '';
    if (name === 'pgvpd_pool_owner_switches_total') {
      switches ??= {};
      switches[kind] = Number(value);
    } else if (name === 'pgvpd_pool_readying_seconds_sum') {
      (readying[kind] ??= { count: 0, seconds: 0 }).seconds = Number(value);
    } else if (name === 'pgvpd_pool_readying_seconds_count') {
      (readying[kind] ??= { count: 0, seconds: 0 }).count = Number(value);
    }
  }
  return { switches, readying };
}

/**
 * Per second over a run of `seconds` from two poolMetrics readings: owner changes (kind reset),
 * all contexts switched in, and the mean readying time of an owner change (µs); nulls where
 * the proxy exports nothing.
 */
export function poolMetricsDelta(before, after, seconds) {
  const none = { ownerChangesPerSecond: null, switchedInPerSecond: null, resetReadyingUs: null };
  if (!before || !after) return none;
  const out = { ...none };
  if (before.switches && after.switches) {
    const d = (k) => (after.switches[k] ?? 0) - (before.switches[k] ?? 0);
    out.ownerChangesPerSecond = d('reset') / seconds;
    out.switchedInPerSecond = Object.keys(after.switches).reduce((a, k) => a + d(k), 0) / seconds;
  }
  const a = after.readying.reset;
  const b = before.readying.reset ?? { count: 0, seconds: 0 };
  if (a && a.count > b.count)
    out.resetReadyingUs = ((a.seconds - b.seconds) * 1e6) / (a.count - b.count);
  return out;
}
