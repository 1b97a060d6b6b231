#!/usr/bin/env node
// A reference for bench/org.mjs, not a product setting: `pgvpd serve` (same arguments) with org
// mode's per-checkout context step taken out. Checkout.prepare (proxy/pool/checkout.ts) readies a
// checked-out pooled session with readyFor (proxy/pool/switch.ts): the client's startup parameters
// and, unless the session already holds the user's context, pgvpd.switch_context, in one
// statement. Here prepare applies only the client's parameters (one set_config statement when it
// sends any) and records no owner, so the session pool's release, finding no owner, resets the
// session and does not restore a context onto it either (SessionPool's restore step). Everything
// else is the built proxy as it is: SCRAM, routing, the pool, the early checkout, lending, the
// reset. Beside org mode in the same run it shows what the context costs under churn (for the
// same owner since the one-statement switch: the restore after the reset, off the client's path,
// and nothing at checkout), and beside PgBouncer what the Node.js pool path costs without it.
// Sessions through it have no tenant (fail-closed: protected tables show no rows). Session
// pooling only: a transaction-mode link readies its backends itself.
//
// Usage: node bench/lib/org-without-context.mjs serve --mode org … (as dist/cli/main.js).
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist');
const { Checkout } = await import(pathToFileURL(join(dist, 'proxy', 'pool', 'checkout.js')).href);
const { runCli } = await import(pathToFileURL(join(dist, 'cli', 'program.js')).href);

// The same parameter filter as Checkout.prepare (proxy/pool/checkout.ts), without the context.
// Parameters undefined: a session readied before authentication, which gets the client's
// parameters after it (Checkout.applyParameters, unchanged here).
const notSettings = new Set(['user', 'database', 'options', 'replication']);
Checkout.prototype.prepare = async function prepareWithoutContext(
  session,
  _owner,
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
