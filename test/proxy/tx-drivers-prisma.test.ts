// Prisma 7 with @prisma/adapter-pg (node-postgres underneath, no query engine binary) through a
// pooled proxy in transaction mode: two clients of each org over one pooled backend, findMany
// and raw queries, a batch transaction and an interactive transaction rolled back while the other
// org queues. Every result must be exactly its org's rows and context, and a backend must have
// served both orgs.
// The proxy is in org mode, or in app mode with PGVPD_TX_DRIVERS_PROXY=app (tx-support.ts;
// app-tx-drivers-prisma.test.ts runs this file so).
//
// The client is generated at test time (prisma-client-js, CommonJS, with its runtime and the
// query compiler's WebAssembly in the output) into node_modules/.cache, where its require of
// @prisma/client-runtime-utils resolves. `prisma generate` would download the schema engine from
// binaries.prisma.sh without using it; PRISMA_SCHEMA_ENGINE_BINARY naming any existing file stops
// that, so the test needs only the npm registry. Skipped when prisma, @prisma/client and
// @prisma/adapter-pg are not installed.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import type { TestLike } from '../support/postgres.js';
import {
  BackendLog,
  assertSharing,
  orgIdType,
  txFixture,
  type Org,
  type TxFixture,
} from './tx-support.js';

const require = createRequire(import.meta.url);
const repo = fileURLToPath(new URL('../../', import.meta.url));

function resolvable(name: string): boolean {
  try {
    require.resolve(name);
    return true;
  } catch {
    return false;
  }
}
const missing = ['prisma/package.json', '@prisma/client/package.json', '@prisma/adapter-pg']
  .filter((name) => !resolvable(name))
  .map((name) => name.replace('/package.json', ''));
const skip =
  missing.length > 0 ? `not installed: ${missing.join(', ')} (Prisma 7 devDependencies)` : false;

const schema = `
generator client {
  provider = "prisma-client-js"
  output   = "./client"
}

datasource db {
  provider = "postgresql"
}

model docs {
  id     Int     @id @default(autoincrement())
  org_id String  @db.${orgIdType === 'uuid' ? 'Uuid' : 'Text'}
  body   String?
}
`;

interface Doc {
  id: number;
  org_id: string;
  body: string | null;
}
interface Raw {
  pid: number;
  tenant: string | null;
  rows: string[];
}
/** The part of the generated client used here. */
interface Prisma {
  docs: {
    findMany(args: object): Promise<Doc[]>;
    create(args: object): Promise<Doc>;
    count(): Promise<number>;
  };
  $queryRawUnsafe<T>(query: string): Promise<T>;
  $transaction<T>(work: ((tx: Prisma) => Promise<T>) | Promise<unknown>[]): Promise<T>;
  $disconnect(): Promise<void>;
}
type PrismaClientClass = new (options: { adapter: unknown }) => Prisma;
type PrismaPgClass = new (config: object) => unknown;

/** Generates the client into node_modules/.cache; resolves with its PrismaClient class. */
async function generateClient(t: TestLike): Promise<PrismaClientClass> {
  const cache = join(repo, 'node_modules', '.cache');
  mkdirSync(cache, { recursive: true });
  const dir = mkdtempSync(join(cache, 'pgvpd-tx-prisma-'));
  t.teardown(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  writeFileSync(join(dir, 'schema.prisma'), schema);
  const cli = join(dirname(require.resolve('prisma/package.json')), 'build', 'index.js');
  const result = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [cli, 'generate', '--schema', 'schema.prisma'], {
      cwd: dir,
      env: {
        ...process.env,
        // generate never runs the schema engine; naming an existing file stops its download.
        PRISMA_SCHEMA_ENGINE_BINARY: process.execPath,
        CHECKPOINT_DISABLE: '1',
        PRISMA_HIDE_UPDATE_MESSAGE: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 30_000,
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.once('error', reject);
    child.once('close', (code) => {
      resolve({ code, output });
    });
  });
  if (result.code !== 0) throw new Error(`prisma generate failed: ${result.output}`);
  return (require(join(dir, 'client', 'index.js')) as { PrismaClient: PrismaClientClass })
    .PrismaClient;
}

function clientFor(t: TestLike, x: TxFixture, PrismaClient: PrismaClientClass, org: Org): Prisma {
  const { PrismaPg } = require('@prisma/adapter-pg') as { PrismaPg: PrismaPgClass };
  const adapter = new PrismaPg({ host: '127.0.0.1', ...x.login(org), max: 2 });
  const prisma = new PrismaClient({ adapter });
  t.teardown(() => prisma.$disconnect());
  return prisma;
}

const rawView = `select pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant,
  array(select body from public.docs order by body) as rows`;

t.test('Prisma 7 on @prisma/adapter-pg: both orgs over one backend', { skip }, async (t) => {
  const x = await txFixture(t, 1);
  const PrismaClient = await generateClient(t);
  const orgs: Org[] = ['acme', 'beta', 'acme', 'beta'];
  const clients = orgs.map((org) => clientFor(t, x, PrismaClient, org));
  const log = new BackendLog();
  const wrong: string[] = [];
  await Promise.all(
    clients.map(async (prisma, n) => {
      const org = orgs[n]!;
      const expected = x.expected(org);
      for (let i = 0; i < 8; i++) {
        const [docs, [raw]] = await Promise.all([
          prisma.docs.findMany({ orderBy: { body: 'asc' } }),
          prisma.$queryRawUnsafe<Raw[]>(rawView),
        ]);
        log.add(org, raw!.pid);
        const found = {
          bodies: docs.map((d) => d.body),
          orgIds: [...new Set(docs.map((d) => d.org_id))],
          tenant: raw!.tenant,
          rows: raw!.rows,
        };
        const wanted = {
          bodies: expected.rows,
          orgIds: [expected.tenant],
          tenant: expected.tenant,
          rows: expected.rows,
        };
        if (JSON.stringify(found) !== JSON.stringify(wanted)) {
          wrong.push(`client ${String(n)} (${org}) round ${String(i)}: ${JSON.stringify(found)}`);
        }
      }
    }),
  );
  t.same(wrong, [], 'every findMany and raw query saw exactly its org');
  assertSharing(t, log, x.poolSize, 'Prisma');

  // A batch transaction: one backend, one org.
  const [acme, beta] = clients;
  const [count, [raw]] = await acme!.$transaction<[number, Raw[]]>([
    acme!.docs.count(),
    acme!.$queryRawUnsafe<Raw[]>(rawView),
  ]);
  t.same(
    { count, tenant: raw!.tenant, rows: raw!.rows },
    { count: 2, ...x.expected('acme') },
    'a batch transaction counts and sees acme’s rows',
  );

  // An interactive transaction sees its own insert and rolls back on a throw, while beta queues.
  const betaViews = Promise.all([0, 1, 2].map(() => beta!.$queryRawUnsafe<Raw[]>(rawView)));
  let inside: Raw | undefined;
  const outcome = await acme!
    .$transaction(async (tx) => {
      await tx.docs.create({ data: { org_id: x.f.orgs.acme, body: 'prisma-tx' } });
      [inside] = await tx.$queryRawUnsafe<Raw[]>(rawView);
      throw new Error('roll back');
    })
    .then(
      () => 'committed',
      (error: unknown) => (error as Error).message,
    );
  t.equal(outcome, 'roll back', 'the throw rolled the transaction back');
  t.same(
    { tenant: inside?.tenant, rows: inside?.rows },
    { tenant: x.f.orgs.acme, rows: ['a1', 'a2', 'prisma-tx'] },
    'inside: acme’s rows and prisma-tx',
  );
  for (const [view] of await betaViews) {
    t.same({ tenant: view!.tenant, rows: view!.rows }, x.expected('beta'), 'beta never saw it');
  }
  const after = await acme!.docs.findMany({ orderBy: { body: 'asc' } });
  t.same(
    after.map((d) => d.body),
    ['a1', 'a2'],
    'rolled back',
  );
});
