// The transaction-mode driver matrix for node-postgres, pg-cursor and postgres.js
// (tx-drivers-node.test.ts) through an app-mode proxy: clients log in as `<app role>.acme:alice`
// and `<app role>.beta:alice` with the app role's own password, the proxy authenticates them
// against the role's SCRAM verifier and pools backends per (database, role), switching the tenant
// per transaction (tx-support.ts builds it). The same tests with the same expectations: every
// answer exactly its own tenant's rows and context, and a backend that served both tenants. The
// environment is set before the import, which is dynamic because static imports would run first.
process.env.PGVPD_TX_DRIVERS_PROXY = 'app';
await import('./tx-drivers-node.test.js');
