#!/usr/bin/env node
// A reference for bench/org.mjs, not a product setting: `pgvpd serve` (same arguments) with org
// mode's per-checkout context step taken out, so that a checked-out pooled session gets the
// client's startup parameters but no issue_context on the control connection and no
// pgvpd.set_context on the session. Everything else is the built proxy as it is: SCRAM, routing,
// the pool, the early checkout, lending, the reset. Beside org mode in the same run it shows what
// the signed context costs under churn, and beside PgBouncer what the Node.js pool path costs
// without it. Sessions through it have no tenant (fail-closed: protected tables show no rows).
//
// Usage: node bench/lib/org-without-context.mjs serve --mode org … (as dist/cli/main.js).
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist');
const { Checkout } = await import(pathToFileURL(join(dist, 'proxy', 'org', 'checkout.js')).href);
const { runCli } = await import(pathToFileURL(join(dist, 'cli', 'program.js')).href);

// The same parameter filter as Checkout.prepare (proxy/org/checkout.ts), without the context.
// Parameters undefined: a session readied before authentication, which gets the client's
// parameters after it (Checkout.applyParameters, unchanged here).
const notSettings = new Set(['user', 'database', 'options', 'replication']);
Checkout.prototype.prepare = async function prepareWithoutContext(
  session,
  _org,
  _username,
  parameters,
  abandoned = () => false,
) {
  if (abandoned()) return;
  const values = [];
  const calls = [];
  for (const [name, value] of parameters ?? []) {
    if (notSettings.has(name) || name.toLowerCase().startsWith('pgvpd.')) continue;
    values.push(name, value);
    calls.push(`pg_catalog.set_config($${values.length - 1}, $${values.length}, false)`);
  }
  if (calls.length > 0) {
    await this.org.pool.runExtended(session, `select ${calls.join(', ')}`, values);
  }
};

process.exitCode = await runCli(process.argv);
