// What one context switch costs, measured on one backend with nothing else on it, for
// bench/org.mjs's tx part: the proxy's own reset text and grant code (dist/proxy/pool/switch.js
// ownerReset, dist/proxy/pool/grant.js mintGrant and switchCall), a pg Client logged in as the
// connect_as role, and the backend's on-CPU time from /proc/<pid>/schedstat (the client runs on the
// same machine, so the backend's pid is readable). Variants, each `n` times after `warmup`, the
// owners alternating so that every switch is an owner change:
//   select 1           one round trip, the floor of any statement
//   switch             switch_context alone (what a backend holding no owner gets: after a
//                      session-mode release, or a fresh backend)
//   reset + switch     the proxy's owner-change reset, then switch_context (an owner change in
//                      transaction mode, or at a session-mode checkout by another owner)
//   reset − DISCARD PLANS + switch
//                      the same reset without DISCARD PLANS (DISCARD ALL written out as the
//                      statements PostgreSQL documents it to be, less that one): after DISCARD
//                      PLANS the next switch_context replans every statement of its PL/pgSQL
//                      body, and this variant shows what that costs. Left out when the reset
//                      has no DISCARD PLANS.
// Per variant: the backend's CPU per operation (µs) and the client's wall-clock time per operation
// (µs; the reset and the switch are two round trips here, where the proxy sends them in one
// write); and the proxy's CPU to mint one grant (HMAC-SHA256 of the claims), in this process.
// The registration is made for the measurement (pgvpd.register_instance) and left at the end.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { median } from './cluster.mjs';

/** DISCARD ALL as PostgreSQL documents it (one implicit transaction here), less DISCARD PLANS. */
const discardAllWithoutPlans =
  'CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; UNLISTEN *; ' +
  'SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES';

/** The proxy's reset without DISCARD PLANS, or null when it has none. */
function resetWithoutPlans(reset) {
  if (/^\s*DISCARD ALL;?\s*$/i.test(reset)) return discardAllWithoutPlans;
  const without = reset.replace(/\s*DISCARD PLANS;?/i, '');
  return without === reset ? null : without;
}

/** On-CPU nanoseconds of a single-threaded process (a PostgreSQL backend). */
function backendNs(pid) {
  return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]);
}

/** A pg Client with these options (host, port, database, user, password), connected. */
async function client(options) {
  const c = new pg.Client(options);
  c.on('error', () => {});
  await c.connect();
  return c;
}

/**
 * `root`: the tree whose dist/ holds the proxy's code; `server`: { host, port, database };
 * `proxy`: { user, password } of a pgvpd_proxy member; `role`: { user, password } of the
 * connect_as role; `owners`: two or more { org, user } that may use the role.
 */
export async function measureSwitchCost({
  root,
  server,
  proxy: proxyLogin,
  role: roleLogin,
  owners,
  n = 300,
  warmup = 50,
}) {
  const dist = (p) => import(pathToFileURL(join(root, 'dist/proxy', p)).href);
  const { ownerReset } = await dist('pool/switch.js');
  const { mintGrant, switchCall, grantParams } = await dist('pool/grant.js');
  const withoutPlans = resetWithoutPlans(ownerReset);

  const proxy = await client({ ...server, ...proxyLogin });
  const role = await client({ ...server, ...roleLogin });
  const reg = (
    await proxy.query(
      `select instance_id::text as id, secret from pgvpd.register_instance('bench-switch-cost', 600)`,
    )
  ).rows[0];
  const key = { instance: reg.id, secret: Buffer.from(reg.secret, 'hex') };
  try {
    const r = (await role.query(`select pg_backend_pid() as pid, pgvpd.backend_start() as start`))
      .rows[0];
    const session = { backendPid: r.pid, backendStart: r.start, switchSeq: 0 };
    const grantOwners = owners.map((o) => ({ org: o.org, tenant: null, user: o.user, values: {} }));
    let turn = 0;
    const switchNow = () => {
      const grant = mintGrant(key, session, grantOwners[turn++ % grantOwners.length]);
      return role.query({ text: `select ${switchCall(1)}`, values: grantParams(grant) });
    };
    const variants = {
      'select 1': () => role.query('select 1'),
      switch: switchNow,
      'reset + switch': async () => {
        await role.query(ownerReset);
        await switchNow();
      },
      ...(withoutPlans
        ? {
            'reset − DISCARD PLANS + switch': async () => {
              await role.query(withoutPlans);
              await switchNow();
            },
          }
        : {}),
    };
    const results = {};
    for (const [name, op] of Object.entries(variants)) {
      for (let i = 0; i < warmup; i++) await op();
      const wall = [];
      const cpu0 = backendNs(session.backendPid);
      for (let i = 0; i < n; i++) {
        const t0 = process.hrtime.bigint();
        await op();
        wall.push(Number(process.hrtime.bigint() - t0) / 1000);
      }
      const cpuUs = (backendNs(session.backendPid) - cpu0) / 1000 / n;
      results[name] = { backendCpuUs: cpuUs, wallP50Us: median(wall) };
    }
    // The proxy's side: minting one grant (claims JSON and HMAC), in this process.
    const m = 5000;
    const mintSession = { ...session, switchSeq: 0 };
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < m; i++) mintGrant(key, mintSession, grantOwners[i % grantOwners.length]);
    const mintUs = Number(process.hrtime.bigint() - t0) / 1000 / m;
    return { n, warmup, variants: results, mintUs };
  } finally {
    await proxy.query('select pgvpd.leave_instance($1::bigint)', [reg.id]).catch(() => {});
    await role.end();
    await proxy.end();
  }
}
