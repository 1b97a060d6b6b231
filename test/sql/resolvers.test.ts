// Resolvers: functions issue_context runs, in order, to add values to a context before signing it.
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import t, { type Test } from 'tap';
import { createTestDatabase } from '../support/postgres.js';
import { backendPid, installPgvpd, loginRole } from '../support/pgvpd.js';

const db = await createTestDatabase(t);
await installPgvpd(db);
const adminRole = await loginRole(t, db, 'admin');
const admin = await adminRole.connect();
t.teardown(() => admin.end());
const proxyRole = await loginRole(t, db, 'proxy');
const proxy = await proxyRole.connect();
t.teardown(() => proxy.end());
const app = await loginRole(t, db, 'app');
const session = await app.connect();
t.teardown(() => session.end());

interface Failure {
  code: string;
  message: string;
}

async function failure(promise: Promise<unknown>): Promise<Failure> {
  try {
    await promise;
    return { code: 'no error', message: '' };
  } catch (error) {
    const { code, message } = error as { code?: string; message: string };
    return { code: code ?? '?', message };
  }
}

/** What the proxy does: issue a context for the session, set it, and read back values. */
function issue(
  tenant: string,
  user: string | null = 'alice',
  vals: Record<string, unknown> = {},
): Promise<pg.QueryResult> {
  return backendPid(session).then((pid) =>
    proxy.query('select pgvpd.issue_context($1, $2, $3, $4) as token', [
      pid,
      tenant,
      user,
      JSON.stringify(vals),
    ]),
  );
}

async function contextAfter(
  tenant: string,
  keys: string[],
  user: string | null = 'alice',
  vals: Record<string, unknown> = {},
): Promise<Record<string, string | null>> {
  const { rows } = await issue(tenant, user, vals);
  await session.query('select pgvpd.set_context($1)', [rows[0]!.token]);
  const result: Record<string, string | null> = {};
  for (const key of keys) {
    result[key] = (await session.query('select pgvpd.context($1) as v', [key])).rows[0]!.v;
  }
  return result;
}

/** A resolver function public.<name>(jsonb) with this SQL body, owned by the superuser. */
async function resolverFunction(name: string, body: string, language = 'sql'): Promise<string> {
  await db.query(
    `create or replace function public.${name}(p_context jsonb) returns jsonb language ${language} as $fn$ ${body} $fn$`,
  );
  return `public.${name}(jsonb)`;
}

async function clearResolvers(): Promise<void> {
  // Directly, as pgvpd_admin may: a registered function may have been dropped.
  await admin.query('delete from pgvpd_private.resolvers');
}

t.test('with no resolver, issue_context signs the values it was given', async (t) => {
  t.same(await contextAfter('acme', ['tenant', 'user', 'plan'], 'bob', { plan: 'given' }), {
    tenant: 'acme',
    user: 'bob',
    plan: 'given',
  });
});

t.test('resolvers run in position order, each seeing the values before it', async (t) => {
  t.teardown(clearResolvers);
  const plan = await resolverFunction(
    'resolve_plan',
    `select jsonb_build_object('plan', case p_context ->> 'tenant' when 'acme' then 'pro' else 'free' end,
                               'saw_user', p_context ->> 'user',
                               'saw_given', coalesce(p_context -> 'values' ->> 'given', 'nothing'))`,
  );
  const limit = await resolverFunction(
    'resolve_limit',
    `select jsonb_build_object('row_limit', case p_context -> 'values' ->> 'plan' when 'pro' then 1000 else 10 end,
                               'saw_plan', coalesce(p_context -> 'values' ->> 'plan', 'nothing'))`,
  );
  // Registered in the other order: position decides.
  await admin.query('select pgvpd.resolver_add($1, 20)', [limit]);
  await admin.query('select pgvpd.resolver_add($1, 10)', [plan]);
  t.same(
    (await admin.query('select position, fn, required, name from pgvpd.resolvers()')).rows,
    [
      { position: 10, fn: plan, required: true, name: 'resolve_plan' },
      { position: 20, fn: limit, required: true, name: 'resolve_limit' },
    ],
  );
  t.same(
    await contextAfter(
      'acme',
      ['tenant', 'user', 'plan', 'row_limit', 'saw_plan', 'saw_user', 'saw_given'],
      'alice',
      { given: 'by-proxy' },
    ),
    {
      tenant: 'acme',
      user: 'alice',
      plan: 'pro',
      row_limit: '1000',
      saw_plan: 'pro',
      saw_user: 'alice',
      saw_given: 'by-proxy',
    },
  );
  t.same(await contextAfter('other', ['plan', 'row_limit']), { plan: 'free', row_limit: '10' });
});

t.test('a later resolver replaces a value of the same name', async (t) => {
  t.teardown(clearResolvers);
  await admin.query('select pgvpd.resolver_add($1, 1)', [
    await resolverFunction('first_says', `select '{"region": "eu"}'::jsonb`),
  ]);
  await admin.query('select pgvpd.resolver_add($1, 2)', [
    await resolverFunction('second_says', `select '{"region": "us"}'::jsonb`),
  ]);
  t.same(await contextAfter('acme', ['region'], 'alice', { region: 'given' }), { region: 'us' });
});

const failures: [string, string, string][] = [
  ['raises', `begin raise exception 'no plan for %', p_context ->> 'tenant'; end`, 'no plan for acme'],
  ['returns NULL', 'begin return null; end', 'it returned NULL'],
  ['returns an array', `begin return '[1]'::jsonb; end`, 'it returned a JSON array, not an object'],
  ['returns a string', `begin return '"pro"'::jsonb; end`, 'it returned a JSON string, not an object'],
  [
    'returns a value named tenant',
    `begin return '{"tenant": "evil"}'::jsonb; end`,
    `it returned value 'tenant', which is not allowed`,
  ],
  [
    'returns a nested object',
    `begin return '{"deep": {"x": 1}}'::jsonb; end`,
    `it returned value 'deep', which is not allowed`,
  ],
];
for (const [what, body, why] of failures) {
  t.test(`a required resolver that ${what} refuses the context with 28000`, async (t) => {
    t.teardown(clearResolvers);
    const fn = await resolverFunction(`failing_${randomBytes(3).toString('hex')}`, body, 'plpgsql');
    await admin.query(`select pgvpd.resolver_add($1, 1, true, 'plans')`, [fn]);
    t.same(await failure(issue('acme')), {
      code: '28000',
      message: `pgvpd: resolver plans failed: ${why}`,
    });
  });
}

t.test('an optional resolver that fails is skipped and what it did is undone', async (t) => {
  t.teardown(clearResolvers);
  await db.query('create table public.resolver_log (entry text)');
  await db.query('grant insert, select on public.resolver_log to pgvpd_admin');
  const flaky = await resolverFunction(
    'flaky',
    `begin insert into public.resolver_log values ('flaky ran'); raise exception 'flaky failed'; end`,
    'plpgsql',
  );
  const broken = await resolverFunction('broken', `select '[]'::jsonb`);
  const steady = await resolverFunction(
    'steady',
    `select jsonb_build_object('steady', 'yes')`,
  );
  await admin.query('select pgvpd.resolver_add($1, 1, false)', [flaky]);
  await admin.query('select pgvpd.resolver_add($1, 2, false)', [broken]);
  await admin.query('select pgvpd.resolver_add($1, 3)', [steady]);
  t.same(await contextAfter('acme', ['tenant', 'steady']), { tenant: 'acme', steady: 'yes' });
  t.same((await db.query('select * from public.resolver_log')).rows, [], 'its insert rolled back');
});

t.test('a resolver whose function was dropped fails closed', async (t) => {
  t.teardown(clearResolvers);
  const fn = await resolverFunction('doomed_resolver', `select '{}'::jsonb`);
  await admin.query('select pgvpd.resolver_add($1, 1)', [fn]);
  await db.query('drop function public.doomed_resolver(jsonb)');
  t.same(await failure(issue('acme')), {
    code: '28000',
    message: `pgvpd: resolver doomed_resolver failed: function ${fn} does not exist`,
  });
});

t.test('issue_context still refuses bad input with its own errors, before any resolver', async (t) => {
  t.teardown(clearResolvers);
  await db.query('create table public.resolver_calls (n int)');
  await db.query('grant insert on public.resolver_calls to pgvpd_admin');
  await admin.query('select pgvpd.resolver_add($1, 1)', [
    await resolverFunction(
      'counting',
      `insert into public.resolver_calls values (1); select '{}'::jsonb`,
    ),
  ]);
  t.same(await failure(issue('bad\ntenant')), {
    code: '22023',
    message: 'pgvpd: tenant must be 1 to 255 characters without control characters',
  });
  t.same(await failure(issue('acme', 'alice', { 'Bad-Name': 1 })), {
    code: '22023',
    message: `pgvpd: context value 'Bad-Name' is not allowed`,
  });
  t.same((await db.query('select * from public.resolver_calls')).rows, [], 'no resolver ran');
});

async function role(t: Test, options: string): Promise<string> {
  const name = `res_${randomBytes(4).toString('hex')}`;
  await db.query(`create role ${name} ${options}`);
  t.teardown(async () => {
    await db.query(`drop owned by ${name}`).catch(() => undefined);
    await db.query(`drop role if exists ${name}`).catch(() => undefined);
  });
  return name;
}

t.test('resolver_add refuses what cannot be a resolver', async (t) => {
  t.teardown(clearResolvers);
  const ok = await resolverFunction('fine', `select '{}'::jsonb`);
  await admin.query('select pgvpd.resolver_add($1, 5)', [ok]);
  await db.query(`create function public.wrong_args(text) returns jsonb language sql as $$ select '{}'::jsonb $$`);
  await db.query(`create function public.wrong_result(jsonb) returns text language sql as $$ select '' $$`);
  await db.query(`create function public.many(jsonb) returns setof jsonb language sql as $$ select '{}'::jsonb $$`);
  const owner = await role(t, 'nologin');
  await db.query(`grant create on schema public to ${owner}`);
  await db.query(`create function public.changeable(jsonb) returns jsonb language sql as $$ select '{}'::jsonb $$`);
  await db.query(`alter function public.changeable(jsonb) owner to ${owner}`);
  await db.query(`create function public.private_fn(jsonb) returns jsonb language sql as $$ select '{}'::jsonb $$`);
  await db.query('revoke execute on function public.private_fn(jsonb) from public');
  const cases: [string, string, Failure][] = [
    ['wrong_args(text)', 'public.wrong_args(text)', { code: '22023', message: 'pgvpd: public.wrong_args(text) cannot be a resolver: a resolver takes (jsonb) and returns jsonb' }],
    ['wrong_result(jsonb)', 'public.wrong_result(jsonb)', { code: '22023', message: 'pgvpd: public.wrong_result(jsonb) cannot be a resolver: a resolver takes (jsonb) and returns jsonb' }],
    ['a set-returning function', 'public.many(jsonb)', { code: '22023', message: 'pgvpd: public.many(jsonb) cannot be a resolver: a resolver takes (jsonb) and returns jsonb' }],
    [
      'an invoker function another role owns',
      'public.changeable(jsonb)',
      { code: '42501', message: `pgvpd: public.changeable(jsonb) cannot be a resolver: it would run as pgvpd_admin, but its owner ${owner} could change it` },
    ],
    ['a function pgvpd_admin may not execute', 'public.private_fn(jsonb)', { code: '42501', message: 'pgvpd: public.private_fn(jsonb) cannot be a resolver: pgvpd_admin may not execute it' }],
    ['a function registered already', ok, { code: '23505', message: `pgvpd: ${ok} is already a resolver, at position 5` }],
  ];
  for (const [what, fn, expected] of cases) {
    t.same(await failure(admin.query('select pgvpd.resolver_add($1, 6)', [fn])), expected, what);
  }
  await resolverFunction('other_fine', `select '{}'::jsonb`);
  t.same(await failure(admin.query(`select pgvpd.resolver_add('public.other_fine(jsonb)', 5)`)), {
    code: '23505',
    message: 'pgvpd: resolver position 5 is taken by fine',
  });
  // A SECURITY DEFINER function runs as its owner, so anyone may own it.
  await db.query('alter function public.changeable(jsonb) security definer');
  await admin.query(`select pgvpd.resolver_add('public.changeable(jsonb)', 6)`);
  t.pass('a definer function of another owner is accepted');
});

t.test('a resolver changed to run as pgvpd_admin after registration is refused at call time', async (t) => {
  t.teardown(clearResolvers);
  const owner = await role(t, 'login');
  await db.query(
    `create function public.turncoat(jsonb) returns jsonb language sql security definer as $$ select '{"x": 1}'::jsonb $$`,
  );
  await db.query(`alter function public.turncoat(jsonb) owner to ${owner}`);
  await admin.query(`select pgvpd.resolver_add('public.turncoat(jsonb)', 1)`);
  t.same(await contextAfter('acme', ['x']), { x: '1' });
  await db.query(`set role ${owner}; alter function public.turncoat(jsonb) security invoker; reset role`);
  t.same(await failure(issue('acme')), {
    code: '28000',
    message: `pgvpd: resolver turncoat failed: it would run as pgvpd_admin, but its owner ${owner} could change it`,
  });
});

t.test('resolver_remove unregisters, and issue_context goes back to no resolvers', async (t) => {
  const fn = await resolverFunction('removable', `select '{"removable": "yes"}'::jsonb`);
  await admin.query('select pgvpd.resolver_add($1, 1)', [fn]);
  t.same(await contextAfter('acme', ['removable']), { removable: 'yes' });
  t.equal((await admin.query('select pgvpd.resolver_remove($1) as r', [fn])).rows[0]!.r, true);
  t.equal((await admin.query('select pgvpd.resolver_remove($1) as r', [fn])).rows[0]!.r, false);
  t.same((await admin.query('select * from pgvpd.resolvers()')).rows, []);
  t.same(await contextAfter('acme', ['removable']), { removable: null });
});

t.test('registering resolvers is for pgvpd_admin only', async (t) => {
  const fn = await resolverFunction('nobodys', `select '{}'::jsonb`);
  for (const [who, client] of [
    ['app', session],
    ['proxy', proxy],
  ] as const) {
    for (const sql of [
      'select pgvpd.resolver_add($1, 1)',
      'select pgvpd.resolver_remove($1)',
    ]) {
      t.same(
        await failure(client.query(sql, [fn])),
        { code: '42501', message: `permission denied for function ${/resolver_\w+/.exec(sql)![0]}` },
        `${who}: ${sql}`,
      );
    }
  }
});
