--! Previous: sha1:ddd8a80706fedfddf0989515441d374ebd42c476
--! Hash: sha1:fe8bcde25c0f879887467d0eb2d0372c2f519322
--! Message: control plane

--! split: 1-api-role-secrets-tables.sql
-- The control plane, part 1: the API role, secrets and the tables (docs/control-plane.md §1).
-- Why: the HTTP control plane (pgvpd serve's admin server) provisions orgs, manages org users and
-- hands out invites on behalf of callers that present a bearer token. SQL decides and HTTP carries:
-- every token and invite is checked here, by SECURITY DEFINER functions, and the HTTP server's
-- login holds no right but EXECUTE on those functions, through role pgvpd_api.
-- Secrets (API tokens and invites) are `pgvpd_tok_` or `pgvpd_inv_`, then 32 random bytes as 64
-- lower-case hex characters, then an 8-hex checksum (the first 8 hex characters of
-- sha256(prefix || body)): 82 characters, matched by a scanner with \bpgvpd_(tok|inv)_[0-9a-f]{72}\b.
-- Guarantees:
-- - pgvpd_api is NOLOGIN (deployments make a login a member of it) and gets no USAGE on
--   pgvpd_private: its members reach pgvpd's data only through the functions granted to it
--   (part 7);
-- - a secret is never stored: only sha256 of its text (32 bytes, unique), computed here from the
--   plaintext the caller binds; a value that is not well formed or whose checksum is wrong hashes
--   to NULL, which matches no row, so it takes the same path as an unknown one;
-- - an org token (scope org) is bound to exactly one org, the other scopes to none; an invite
--   belongs to one org; at most one invite per (org, username) is open (neither consumed nor
--   revoked); removing an org removes its tokens, invites and allowed roles with it.

do $$
begin
  if not exists (select 1 from pg_catalog.pg_roles r where r.rolname = 'pgvpd_api') then
    begin
      create role pgvpd_api nologin noinherit nosuperuser nobypassrls nocreatedb nocreaterole;
    exception when duplicate_object or unique_violation then
      null; -- created meanwhile by a setup running in another database of this cluster
    end;
  end if;
end;
$$;

-- The checksum of a secret's body: the first 8 hex characters of sha256(prefix || body).
create or replace function pgvpd_private.secret_checksum(p_prefix text, p_body text) returns text
language sql immutable strict parallel safe security definer set search_path = ''
as $$
  select pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(p_prefix || p_body, 'UTF8')), 'hex'), 8)
$$;

-- A new secret with this prefix: prefix, 32 random bytes in hex, checksum.
create or replace function pgvpd_private.new_secret(p_prefix text) returns text
language sql volatile strict security definer set search_path = ''
as $$
  select p_prefix || b.body || pgvpd_private.secret_checksum(p_prefix, b.body)
    from (select pg_catalog.encode(pgvpd_private.random_bytes(32), 'hex') as body) b
$$;

-- What is stored of a secret: sha256 of its text; NULL unless it is well formed (this prefix,
-- 72 lower-case hex characters) with the right checksum.
create or replace function pgvpd_private.secret_hash(p_prefix text, p_secret text) returns bytea
language sql immutable parallel safe security definer set search_path = ''
as $$
  select case
           when p_prefix is not null and p_secret is not null
                and pg_catalog.length(p_secret) = pg_catalog.length(p_prefix) + 72
                and pg_catalog.left(p_secret, pg_catalog.length(p_prefix)) = p_prefix
                and pg_catalog.right(p_secret, 72) ~ '^[0-9a-f]{72}$'
                and pg_catalog.right(p_secret, 8) = pgvpd_private.secret_checksum(
                      p_prefix, pg_catalog.substr(p_secret, pg_catalog.length(p_prefix) + 1, 64))
             then pg_catalog.sha256(pg_catalog.convert_to(p_secret, 'UTF8'))
         end
$$;

create table if not exists pgvpd_private.api_tokens (
  id uuid primary key default pg_catalog.gen_random_uuid(),
  token_hash bytea not null unique check (pg_catalog.length(token_hash) = 32),
  scope text not null check (scope in ('operator', 'org', 'metrics')),
  org_id uuid references pgvpd_private.orgs (id) on delete cascade,
  name text check (name ~ '^[^[:cntrl:]]{1,255}$'),
  created_at timestamptz not null default pg_catalog.clock_timestamp(),
  expires_at timestamptz,
  revoked_at timestamptz,
  last_used_at timestamptz,
  constraint api_tokens_org_iff_org_scope check ((scope = 'org') = (org_id is not null))
);
create index if not exists api_tokens_org on pgvpd_private.api_tokens (org_id);
--@ext select pg_catalog.pg_extension_config_dump('pgvpd_private.api_tokens', '');

create table if not exists pgvpd_private.invites (
  id uuid primary key default pg_catalog.gen_random_uuid(),
  token_hash bytea not null unique check (pg_catalog.length(token_hash) = 32),
  org_id uuid not null references pgvpd_private.orgs (id) on delete cascade,
  username text not null check (username ~ '^[^[:cntrl:]]{1,63}$'),
  connect_as name not null,
  created_at timestamptz not null default pg_catalog.clock_timestamp(),
  expires_at timestamptz not null,
  consumed_at timestamptz,
  revoked_at timestamptz
);
-- At most one open invite per (org, username): invite_create revokes the open one first.
create unique index if not exists invites_one_open on pgvpd_private.invites (org_id, username)
  where consumed_at is null and revoked_at is null;
--@ext select pg_catalog.pg_extension_config_dump('pgvpd_private.invites', '');

-- The roles an org token may choose as connect_as for its org, set by an operator.
create table if not exists pgvpd_private.org_connect_as (
  org_id uuid not null references pgvpd_private.orgs (id) on delete cascade,
  role_name name not null,
  created_at timestamptz not null default pg_catalog.clock_timestamp(),
  primary key (org_id, role_name)
);
--@ext select pg_catalog.pg_extension_config_dump('pgvpd_private.org_connect_as', '');

-- 22023 unless the verifier has PostgreSQL's format (check_verifier) and at least 4096
-- iterations, the least PostgreSQL itself uses (scram_iterations' default). The verifier never
-- appears in a message.
create or replace function pgvpd_private.check_verifier_iterations(p_verifier text) returns void
language plpgsql immutable security definer set search_path = ''
as $$
begin
  perform pgvpd_private.check_verifier(p_verifier);
  if pg_catalog.split_part(pg_catalog.split_part(p_verifier, '$', 2), ':', 1)::bigint < 4096 then
    raise exception using errcode = '22023',
      message = 'pgvpd: verifier has fewer than 4096 iterations',
      hint = 'compute it with at least 4096 iterations of PBKDF2, as PostgreSQL does';
  end if;
end;
$$;

--! split: 2-org-create-with-id.sql
-- The control plane, part 2: org_create takes a caller-chosen id.
-- Why: a SaaS provisions an org under the id it already uses for its customer (the HTTP route is
-- POST /api/v1/orgs/:id/provision), so org_create gains p_id uuid default null, last, and
-- otherwise behaves as in 000005. Adding a parameter makes a new function, so the old signature is
-- dropped first (callers passing up to five arguments reach the new one unchanged).
-- Guarantees: with p_id, the org gets exactly that id or the call fails: 23505
-- 'pgvpd: org <id> already exists' when an org holds it, also when a concurrent call took it.

drop function if exists pgvpd.org_create(text, text, text, text, text);

-- Records a new org and returns its id (p_id when given, else a new one). The database name
-- defaults to the id. For a dedicated org the caller (the CLI) creates target_database on the
-- server afterwards.
create or replace function pgvpd.org_create(
  p_display_name text,
  p_database_name text default null,
  p_placement text default 'shared',
  p_server text default 'default',
  p_target_database text default null,
  p_id uuid default null
) returns uuid
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_id uuid := coalesce(p_id, pg_catalog.gen_random_uuid());
  v_name text := coalesce(p_database_name, v_id::text);
  v_target text;
  v_problem record;
  v_other pgvpd_private.orgs;
begin
  if exists (select 1 from pgvpd_private.orgs o where o.id = v_id) then
    raise exception using errcode = '23505', message = pg_catalog.format('pgvpd: org %L already exists', v_id);
  end if;

  select p.* into v_problem from pgvpd_private.database_name_problem(v_name) p;
  if found and v_problem.errcode = '22023' then
    raise exception using errcode = v_problem.errcode, message = v_problem.message,
      hint = 'database names match ^[a-z0-9][a-z0-9_-]{0,62}$';
  elsif found then
    raise exception using errcode = v_problem.errcode, message = v_problem.message;
  end if;
  if p_display_name is not null and p_display_name !~ '^[^[:cntrl:]]{1,255}$' then
    raise exception using errcode = '22023',
      message = 'pgvpd: display name must be 1 to 255 characters without control characters';
  end if;
  if p_placement is null or p_placement not in ('shared', 'dedicated') then
    raise exception using errcode = '22023', message = 'pgvpd: placement must be shared or dedicated';
  end if;
  perform pgvpd_private.server_must_exist(p_server);
  v_target := coalesce(p_target_database, case p_placement when 'shared' then pg_catalog.current_database() else v_name end);
  if v_target !~ '^[^[:cntrl:]]{1,63}$' or pg_catalog.octet_length(v_target) > 63 then
    raise exception using errcode = '22023',
      message = 'pgvpd: target database must be 1 to 63 bytes without control characters';
  end if;
  if p_placement = 'dedicated' and v_target in ('postgres', 'template0', 'template1') then
    raise exception using errcode = '42939',
      message = pg_catalog.format('pgvpd: database %L cannot be dedicated to an org', v_target);
  end if;
  -- One database on one server is shared by orgs, or dedicated to one org, never both.
  perform 1 from pgvpd_private.servers s where s.name = p_server for update;
  select o.* into v_other from pgvpd_private.orgs o
   where o.server_name = p_server and o.target_database = v_target
     and (p_placement = 'dedicated' or o.placement = 'dedicated')
   order by o.database_name
   limit 1;
  if found then
    raise exception using errcode = '23505',
      message = pg_catalog.format('pgvpd: database %L on server %L is already in use by org %L',
        v_target, p_server, v_other.database_name),
      hint = case when p_placement = 'dedicated' then 'a dedicated org needs a database of its own'
                  else 'that database is dedicated to one org' end;
  end if;

  begin
    insert into pgvpd_private.orgs (id, database_name, display_name, placement, server_name, target_database)
    values (v_id, v_name, p_display_name, p_placement, p_server, v_target);
  exception when unique_violation then
    -- Taken meanwhile by a concurrent org_create: the same id, or the same name.
    if exists (select 1 from pgvpd_private.orgs o where o.id = v_id) then
      raise exception using errcode = '23505', message = pg_catalog.format('pgvpd: org %L already exists', v_id);
    end if;
    raise exception using errcode = '23505', message = pg_catalog.format('pgvpd: database name %L is already taken', v_name);
  end;
  return v_id;
end;
$$;

--! split: 3-tokens.sql
-- The control plane, part 3: API tokens.
-- Why: callers of the HTTP control plane present a bearer token; its scope says what it may do:
-- operator (everything), org (what concerns its one org), metrics (read /metrics). An operator
-- creates the first token with the CLI (token_create, pgvpd_admin only); the HTTP server checks
-- each request's token here, with api_authorize, and nowhere else.
-- Guarantees:
-- - token_create returns the plaintext once; only its hash is stored, and tokens() never returns
--   a hash;
-- - api_authorize answers an unknown, malformed (bad prefix, length, characters or checksum),
--   revoked or expired token with one error, 28000 'pgvpd: invalid token', and a token whose scope
--   does not cover the request (or an org token asking about another org) with one error, 42501
--   'pgvpd: token not allowed here'. That decision reads the token's row and nothing else, so it
--   reveals nothing about the org asked for, not even whether it exists;
-- - nothing is cached: a token revoked (or expired) is refused by the very next call;
-- - last_used_at is written at most once a minute per token, and never in a read-only transaction.

-- The token row, if p_token may act in class p_class (for class org: on org p_org); raises
-- otherwise. Classes: operator (operator tokens), org (operator tokens, and the org token of
-- p_org), metrics (operator and metrics tokens).
create or replace function pgvpd_private.api_token(p_token text, p_class text, p_org uuid)
returns pgvpd_private.api_tokens
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_token pgvpd_private.api_tokens;
  v_now timestamptz := pg_catalog.clock_timestamp();
begin
  if p_class is null or p_class not in ('operator', 'org', 'metrics') then
    raise exception using errcode = '22023', message = pg_catalog.format('pgvpd: unknown token class %L', p_class),
      hint = 'token classes are operator, org and metrics';
  end if;
  select t.* into v_token from pgvpd_private.api_tokens t
   where t.token_hash = pgvpd_private.secret_hash('pgvpd_tok_', p_token)
     and t.revoked_at is null
     and (t.expires_at is null or t.expires_at > v_now);
  if not found then
    raise exception using errcode = '28000', message = 'pgvpd: invalid token';
  end if;
  if not coalesce(case p_class
                    when 'operator' then v_token.scope = 'operator'
                    when 'metrics' then v_token.scope in ('operator', 'metrics')
                    else v_token.scope = 'operator' or (v_token.scope = 'org' and v_token.org_id = p_org)
                  end, false) then
    raise exception using errcode = '42501', message = 'pgvpd: token not allowed here';
  end if;
  -- Not in a read-only transaction (a caller may read in one): the check itself writes nothing.
  if pg_catalog.current_setting('transaction_read_only') = 'off' then
    update pgvpd_private.api_tokens t set last_used_at = v_now
     where t.id = v_token.id and (t.last_used_at is null or t.last_used_at <= v_now - interval '1 minute');
  end if;
  return v_token;
end;
$$;

-- For the HTTP server: the token's id when p_token may act in class p_class (on org p_org), as
-- pgvpd_private.api_token. Every pgvpd.api_* function checks its token the same way, first.
create or replace function pgvpd.api_authorize(p_token text, p_class text, p_org uuid default null) returns uuid
language plpgsql volatile security definer set search_path = ''
as $$
begin
  return (pgvpd_private.api_token(p_token, p_class, p_org)).id;
end;
$$;

-- A new token. p_org is given exactly for scope org; p_ttl, when given, is how long it is valid.
create or replace function pgvpd.token_create(p_scope text, p_org uuid default null, p_name text default null, p_ttl interval default null)
returns table (id uuid, token text, expires_at timestamptz)
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_token text := pgvpd_private.new_secret('pgvpd_tok_');
  v_now timestamptz := pg_catalog.clock_timestamp();
  v_id uuid;
begin
  if p_scope is null or p_scope not in ('operator', 'org', 'metrics') then
    raise exception using errcode = '22023', message = pg_catalog.format('pgvpd: invalid token scope %L', p_scope),
      hint = 'token scopes are operator, org and metrics';
  end if;
  if p_scope = 'org' and p_org is null then
    raise exception using errcode = '22023', message = 'pgvpd: an org token needs an org';
  end if;
  if p_scope <> 'org' and p_org is not null then
    raise exception using errcode = '22023',
      message = 'pgvpd: only an org token is bound to an org';
  end if;
  if p_ttl is not null and p_ttl <= interval '0' then
    raise exception using errcode = '22023', message = 'pgvpd: token ttl must be positive';
  end if;
  if p_name is not null and p_name !~ '^[^[:cntrl:]]{1,255}$' then
    raise exception using errcode = '22023',
      message = 'pgvpd: token name must be 1 to 255 characters without control characters';
  end if;
  if p_org is not null then
    perform pgvpd_private.org_must_exist(p_org);
  end if;
  insert into pgvpd_private.api_tokens as t (token_hash, scope, org_id, name, created_at, expires_at)
  values (pgvpd_private.secret_hash('pgvpd_tok_', v_token), p_scope, p_org, p_name, v_now, v_now + p_ttl)
  returning t.id into v_id;
  return query select v_id, v_token, v_now + p_ttl;
end;
$$;

-- Tokens (of org p_org, or all), newest last; never a hash.
create or replace function pgvpd.tokens(p_org uuid default null)
returns table (
  id uuid, scope text, org_id uuid, name text, created_at timestamptz, expires_at timestamptz,
  revoked_at timestamptz, last_used_at timestamptz
)
language plpgsql stable security definer set search_path = ''
as $$
begin
  if p_org is not null then
    perform pgvpd_private.org_must_exist(p_org);
  end if;
  return query
    select t.id, t.scope, t.org_id, t.name, t.created_at, t.expires_at, t.revoked_at, t.last_used_at
      from pgvpd_private.api_tokens t
     where p_org is null or t.org_id = p_org
     order by t.created_at, t.id;
end;
$$;

-- Revokes a token: the next request with it is refused. False when it was revoked already.
create or replace function pgvpd.token_revoke(p_id uuid) returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
begin
  if not exists (select 1 from pgvpd_private.api_tokens t where t.id = p_id) then
    raise exception using errcode = '42704', message = pg_catalog.format('pgvpd: no token %L', p_id);
  end if;
  update pgvpd_private.api_tokens t set revoked_at = pg_catalog.clock_timestamp()
   where t.id = p_id and t.revoked_at is null;
  return found;
end;
$$;

--! split: 4-allowed-roles.sql
-- The control plane, part 4: the roles an org token may choose as connect_as.
-- Why: a connect_as role is the customer's database role that an org user's sessions run as. An
-- org token (held by the customer's own admin tooling) must not pick just any role that passes
-- check_connect_as, or it could point its users at another org's role; an operator lists, per
-- org, the roles its org tokens may choose. Operator tokens and the CLI may use any role that
-- passes check_connect_as.
-- Guarantees: a role is allowed only after passing check_connect_as (with its codes); an org
-- token choosing a role that is not allowed for its org gets 42501 naming the role, before
-- anything is written or the role itself is looked at. Disallowing a role changes no existing
-- user or invite.

create or replace function pgvpd.org_allow_role(p_org uuid, p_role name) returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.org_must_exist(p_org);
  perform pgvpd_private.check_connect_as(p_role);
  insert into pgvpd_private.org_connect_as (org_id, role_name) values (p_org, p_role) on conflict do nothing;
  return found;
end;
$$;

create or replace function pgvpd.org_disallow_role(p_org uuid, p_role name) returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.org_must_exist(p_org);
  delete from pgvpd_private.org_connect_as a where a.org_id = p_org and a.role_name = p_role;
  return found;
end;
$$;

create or replace function pgvpd.org_allowed_roles(p_org uuid) returns setof name
language plpgsql stable security definer set search_path = ''
as $$
begin
  perform pgvpd_private.org_must_exist(p_org);
  return query select a.role_name from pgvpd_private.org_connect_as a where a.org_id = p_org order by a.role_name;
end;
$$;

-- 42501 when p_token (the row api_token returned) is an org token and p_role is not allowed for
-- p_org; nothing for an operator token (check_connect_as still applies where the role is used).
create or replace function pgvpd_private.check_connect_as_allowed(p_token pgvpd_private.api_tokens, p_org uuid, p_role name)
returns void
language plpgsql stable security definer set search_path = ''
as $$
begin
  if p_token.scope <> 'operator'
     and not exists (select 1 from pgvpd_private.org_connect_as a where a.org_id = p_org and a.role_name = p_role) then
    raise exception using errcode = '42501',
      message = pg_catalog.format('pgvpd: connect_as role %I is not allowed for this org', p_role),
      hint = 'an operator allows it: pgvpd org allow-role <org> <role>';
  end if;
end;
$$;

--! split: 5-invites.sql
-- The control plane, part 5: invites.
-- Why: an org admin invites a person by username; the person opens the setup page, chooses a
-- PostgreSQL password there, and the browser sends only the SCRAM verifier computed from it. The
-- invite carries the org, the username and the connect_as role; redeeming it adds the user.
-- Guarantees:
-- - invite_create returns the plaintext once; only its hash is stored. It lives 24 hours unless
--   told otherwise, at most 7 days; creating an invite for a (org, username) revokes the open one;
-- - invite_info and invite_redeem answer an unknown, malformed, expired, revoked or consumed
--   invite, and an invite whose org is suspended, with one error: PV410
--   'pgvpd: invite is not valid', the same code and message on every path;
-- - invite_redeem checks the verifier first (PostgreSQL's format, at least 4096 iterations,
--   22023): a bad one leaves the invite open. It then consumes the invite with one row-locking
--   UPDATE whose WHERE says "still open"; concurrent redeemers queue on the row lock and re-read
--   it (READ COMMITTED), so exactly one consumes it and the others get PV410. The user is added by
--   pgvpd.user_add, in the same transaction (its NOTIFY tells the proxies at commit): if that
--   fails (the user exists meanwhile, the role no longer passes check_connect_as) the consumption
--   rolls back with it and the invite stays open.

-- A new invite for p_username in org p_org, running as p_connect_as once redeemed. 22023 for a
-- ttl outside (0, 7 days] or a bad username; check_connect_as's codes; 23505 when the org has
-- that user already.
create or replace function pgvpd.invite_create(p_org uuid, p_username text, p_connect_as name, p_ttl interval default '24 hours')
returns table (id uuid, invite text, expires_at timestamptz)
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_invite text := pgvpd_private.new_secret('pgvpd_inv_');
  v_now timestamptz := pg_catalog.clock_timestamp();
  v_id uuid;
begin
  if p_ttl is null or p_ttl <= interval '0' or p_ttl > interval '7 days' then
    raise exception using errcode = '22023', message = 'pgvpd: invite ttl must be more than 0 and at most 7 days';
  end if;
  perform pgvpd_private.org_must_exist(p_org);
  perform pgvpd_private.check_username(p_username);
  perform pgvpd_private.check_connect_as(p_connect_as);
  -- Creators of invites for one org queue here, so that the revoke and the insert below see each
  -- other (the lock does not conflict with the proxies' reads or with inserts referring to the org).
  perform 1 from pgvpd_private.orgs o where o.id = p_org for no key update;
  if exists (select 1 from pgvpd_private.org_users u where u.org_id = p_org and u.username = p_username) then
    raise exception using errcode = '23505',
      message = pg_catalog.format('pgvpd: user %L already exists in org %L', p_username, p_org);
  end if;
  update pgvpd_private.invites i set revoked_at = v_now
   where i.org_id = p_org and i.username = p_username and i.consumed_at is null and i.revoked_at is null;
  insert into pgvpd_private.invites as i (token_hash, org_id, username, connect_as, created_at, expires_at)
  values (pgvpd_private.secret_hash('pgvpd_inv_', v_invite), p_org, p_username, p_connect_as, v_now, v_now + p_ttl)
  returning i.id into v_id;
  return query select v_id, v_invite, v_now + p_ttl;
end;
$$;

-- An org's invites, oldest first. state: consumed, revoked, expired or open (the first that holds).
create or replace function pgvpd.invites(p_org uuid)
returns table (id uuid, username text, connect_as name, state text, created_at timestamptz, expires_at timestamptz)
language plpgsql stable security definer set search_path = ''
as $$
begin
  perform pgvpd_private.org_must_exist(p_org);
  return query
    select i.id, i.username, i.connect_as,
           case when i.consumed_at is not null then 'consumed'
                when i.revoked_at is not null then 'revoked'
                when i.expires_at <= pg_catalog.clock_timestamp() then 'expired'
                else 'open' end,
           i.created_at, i.expires_at
      from pgvpd_private.invites i
     where i.org_id = p_org
     order by i.created_at, i.id;
end;
$$;

-- Revokes an open invite; false when it was consumed or revoked already. 42704 when the org has no
-- such invite.
create or replace function pgvpd.invite_revoke(p_org uuid, p_id uuid) returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
begin
  if not exists (select 1 from pgvpd_private.invites i where i.org_id = p_org and i.id = p_id) then
    raise exception using errcode = '42704', message = pg_catalog.format('pgvpd: no invite %L in org %L', p_id, p_org);
  end if;
  update pgvpd_private.invites i set revoked_at = pg_catalog.clock_timestamp()
   where i.id = p_id and i.consumed_at is null and i.revoked_at is null;
  return found;
end;
$$;

-- Deletes invites that were consumed, revoked or expired longer than p_older_than ago; returns
-- how many.
create or replace function pgvpd.prune_invites(p_older_than interval default '30 days') returns integer
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_before timestamptz;
  v_count integer;
begin
  if p_older_than is null or p_older_than < interval '0' then
    raise exception using errcode = '22023', message = 'pgvpd: prune_invites needs an interval of 0 or more';
  end if;
  v_before := pg_catalog.clock_timestamp() - p_older_than;
  delete from pgvpd_private.invites i
   where i.consumed_at < v_before or i.revoked_at < v_before or i.expires_at < v_before;
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;

-- For the setup page: what the invite is for. PV410 for any invite that is not open, or whose
-- org is suspended.
create or replace function pgvpd.invite_info(p_invite text)
returns table (database_name text, display_name text, username text, expires_at timestamptz)
language plpgsql stable security definer set search_path = ''
as $$
begin
  return query
    select o.database_name, o.display_name, i.username, i.expires_at
      from pgvpd_private.invites i
      join pgvpd_private.orgs o on o.id = i.org_id
     where i.token_hash = pgvpd_private.secret_hash('pgvpd_inv_', p_invite)
       and i.consumed_at is null and i.revoked_at is null and i.expires_at > pg_catalog.clock_timestamp()
       and o.status = 'active';
  if not found then
    raise exception using errcode = 'PV410', message = 'pgvpd: invite is not valid';
  end if;
end;
$$;

-- Redeems an invite with the SCRAM verifier of the password the invitee chose: adds the user.
create or replace function pgvpd.invite_redeem(p_invite text, p_verifier text)
returns table (database_name text, username text)
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_org uuid;
  v_username text;
  v_connect_as name;
  v_database_name text;
begin
  -- First: a mistyped or weak verifier must not use the invite up.
  perform pgvpd_private.check_verifier_iterations(p_verifier);
  update pgvpd_private.invites i set consumed_at = pg_catalog.clock_timestamp()
    from pgvpd_private.orgs o
   where o.id = i.org_id and o.status = 'active'
     and i.token_hash = pgvpd_private.secret_hash('pgvpd_inv_', p_invite)
     and i.consumed_at is null and i.revoked_at is null and i.expires_at > pg_catalog.clock_timestamp()
  returning i.org_id, i.username, i.connect_as, o.database_name into v_org, v_username, v_connect_as, v_database_name;
  if not found then
    raise exception using errcode = 'PV410', message = 'pgvpd: invite is not valid';
  end if;
  perform pgvpd.user_add(v_org, v_username, p_verifier, v_connect_as);
  return query select v_database_name, v_username;
end;
$$;

--! split: 6-api.sql
-- The control plane, part 6: the token-gated functions the HTTP server calls (pgvpd.api_*), and
-- org_validate, which its public validate route calls without a token.
-- Why: the HTTP server's login (a member of pgvpd_api) may execute these and nothing that changes
-- the catalog directly; each takes the request's bearer token as p_token and checks it first, with
-- pgvpd_private.api_token, before it reads or writes anything (docs/control-plane.md §1 gives each
-- one's token class: operator, or org = an operator token or the org token of p_org).
-- Guarantees:
-- - a call with a token that may not act here fails with api_token's 28000 or 42501 and has
--   touched nothing; in particular an org token asking about another org gets 42501 whether that
--   org exists or not;
-- - an org token chooses connect_as roles only from its org's allowed roles (part 4); every
--   connect_as role still passes check_connect_as;
-- - verifiers go in (api_user_put, with at least 4096 iterations) and never come out;
-- - api_org_provision is idempotent: provisioning an id again with the same spec (database name,
--   display name, placement, server, target database, defaults applied) returns the org with
--   created = false; another spec for that id is 23505. The API creates no database, so a
--   dedicated org needs p_target_database (an existing database, 22023 without one).

create or replace function pgvpd.api_org_provision(
  p_token text,
  p_id uuid,
  p_database_name text default null,
  p_display_name text default null,
  p_placement text default null,
  p_server text default null,
  p_target_database text default null
) returns table (id uuid, database_name text, status text, placement text, created boolean)
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_placement text := coalesce(p_placement, 'shared');
  v_server text := coalesce(p_server, 'default');
  v_name text := coalesce(p_database_name, p_id::text);
  v_org pgvpd_private.orgs;
  v_created boolean := false;
begin
  perform pgvpd_private.api_token(p_token, 'operator', null);
  if p_id is null then
    raise exception using errcode = '22023', message = 'pgvpd: provisioning needs an org id';
  end if;
  if v_placement = 'dedicated' and p_target_database is null then
    raise exception using errcode = '22023',
      message = 'pgvpd: a dedicated org provisioned over the API needs a target database',
      hint = 'the API creates no database: create it on the server, then name it as target_database';
  end if;
  select o.* into v_org from pgvpd_private.orgs o where o.id = p_id;
  if not found then
    begin
      perform pgvpd.org_create(p_display_name, v_name, v_placement, v_server, p_target_database, p_id);
      v_created := true;
    exception when unique_violation then
      -- Provisioned meanwhile by a concurrent call (compared below); or the name is another org's.
      select o.* into v_org from pgvpd_private.orgs o where o.id = p_id;
      if not found then
        raise;
      end if;
    end;
  end if;
  if not v_created
     and (v_org.database_name <> v_name
          or v_org.display_name is distinct from p_display_name
          or v_org.placement <> v_placement
          or v_org.server_name <> v_server
          or v_org.target_database <> coalesce(p_target_database,
               case v_placement when 'shared' then pg_catalog.current_database() else v_name end)) then
    raise exception using errcode = '23505',
      message = pg_catalog.format('pgvpd: org %L already exists with another spec', p_id),
      hint = 'provisioning an org again succeeds only with the same database name, display name, placement, server and target database';
  end if;
  return query
    select o.id, o.database_name, o.status, o.placement, v_created from pgvpd_private.orgs o where o.id = p_id;
end;
$$;

create or replace function pgvpd.api_org_get(p_token text, p_org uuid)
returns table (
  id uuid, database_name text, display_name text, status text, placement text, server_name text,
  target_database text, user_count integer, created_at timestamptz
)
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.api_token(p_token, 'org', p_org);
  perform pgvpd_private.org_must_exist(p_org);
  return query select o.* from pgvpd.orgs() o where o.id = p_org;
end;
$$;

-- Sets the org's status (active or suspended); changed is false when it had it already.
create or replace function pgvpd.api_org_set_status(p_token text, p_org uuid, p_status text)
returns table (status text, changed boolean)
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_changed boolean;
begin
  perform pgvpd_private.api_token(p_token, 'operator', null);
  if p_status is null or p_status not in ('active', 'suspended') then
    raise exception using errcode = '22023', message = 'pgvpd: status must be active or suspended';
  end if;
  if p_status = 'active' then
    v_changed := pgvpd.org_resume(p_org);
  else
    v_changed := pgvpd.org_suspend(p_org);
  end if;
  return query select p_status, v_changed;
end;
$$;

-- Removes the org from the catalog (pgvpd.org_remove): its users, tokens, invites and allowed
-- roles go with it; its rows and roles stay (pgvpd org purge is the CLI's).
create or replace function pgvpd.api_org_remove(p_token text, p_org uuid) returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.api_token(p_token, 'operator', null);
  perform pgvpd.org_remove(p_org);
end;
$$;

-- Whether org_create would take this database name now, and if not why: invalid, reserved, taken.
create or replace function pgvpd.api_name_available(p_token text, p_name text)
returns table (available boolean, reason text)
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_errcode text;
begin
  perform pgvpd_private.api_token(p_token, 'operator', null);
  select p.errcode into v_errcode from pgvpd_private.database_name_problem(p_name) p;
  return query
    select v_errcode is null,
           case v_errcode when '22023' then 'invalid' when '42939' then 'reserved' when '23505' then 'taken' end;
end;
$$;

create or replace function pgvpd.api_users(p_token text, p_org uuid)
returns table (username text, connect_as name, created_at timestamptz)
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.api_token(p_token, 'org', p_org);
  return query select u.username, u.connect_as, u.created_at from pgvpd.org_users(p_org) u;
end;
$$;

create or replace function pgvpd.api_user_get(p_token text, p_org uuid, p_username text)
returns table (username text, connect_as name, created_at timestamptz)
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.api_token(p_token, 'org', p_org);
  perform pgvpd_private.user_must_exist(p_org, p_username);
  return query
    select u.username, u.connect_as, u.created_at from pgvpd_private.org_users u
     where u.org_id = p_org and u.username = p_username;
end;
$$;

-- Creates the user, or sets its verifier (and its connect_as when given and different):
-- 'created' or 'updated'. A new user needs p_connect_as.
create or replace function pgvpd.api_user_put(p_token text, p_org uuid, p_username text, p_verifier text, p_connect_as name default null)
returns text
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_token pgvpd_private.api_tokens := pgvpd_private.api_token(p_token, 'org', p_org);
  v_current name;
begin
  perform pgvpd_private.org_must_exist(p_org);
  perform pgvpd_private.check_username(p_username);
  perform pgvpd_private.check_verifier_iterations(p_verifier);
  select u.connect_as into v_current from pgvpd_private.org_users u
   where u.org_id = p_org and u.username = p_username for update;
  if not found then
    if p_connect_as is null then
      raise exception using errcode = '22023', message = pg_catalog.format('pgvpd: new user %L needs a connect_as role', p_username);
    end if;
    perform pgvpd_private.check_connect_as_allowed(v_token, p_org, p_connect_as);
    begin
      perform pgvpd.user_add(p_org, p_username, p_verifier, p_connect_as);
      return 'created';
    exception when unique_violation then
      -- Added meanwhile by a concurrent call, now committed: this call updates it.
      select u.connect_as into v_current from pgvpd_private.org_users u
       where u.org_id = p_org and u.username = p_username for update;
    end;
  end if;
  if p_connect_as is not null and p_connect_as <> v_current then
    perform pgvpd_private.check_connect_as_allowed(v_token, p_org, p_connect_as);
    perform pgvpd.user_set_connect_as(p_org, p_username, p_connect_as);
  end if;
  perform pgvpd.user_set_verifier(p_org, p_username, p_verifier);
  return 'updated';
end;
$$;

create or replace function pgvpd.api_user_remove(p_token text, p_org uuid, p_username text) returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.api_token(p_token, 'org', p_org);
  perform pgvpd.user_remove(p_org, p_username);
end;
$$;

-- As invite_create, plus the allowed-roles rule of api_user_put; a NULL ttl means 24 hours.
create or replace function pgvpd.api_invite_create(p_token text, p_org uuid, p_username text, p_connect_as name, p_ttl interval default null)
returns table (id uuid, invite text, expires_at timestamptz)
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_token pgvpd_private.api_tokens := pgvpd_private.api_token(p_token, 'org', p_org);
begin
  perform pgvpd_private.org_must_exist(p_org);
  perform pgvpd_private.check_connect_as_allowed(v_token, p_org, p_connect_as);
  return query select c.id, c.invite, c.expires_at
                 from pgvpd.invite_create(p_org, p_username, p_connect_as, coalesce(p_ttl, interval '24 hours')) c;
end;
$$;

create or replace function pgvpd.api_invites(p_token text, p_org uuid)
returns table (id uuid, username text, connect_as name, state text, created_at timestamptz, expires_at timestamptz)
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.api_token(p_token, 'org', p_org);
  return query select i.id, i.username, i.connect_as, i.state, i.created_at, i.expires_at from pgvpd.invites(p_org) i;
end;
$$;

-- Revokes the invite (already consumed or revoked: nothing changes); 42704 when the org has no
-- such invite.
create or replace function pgvpd.api_invite_revoke(p_token text, p_org uuid, p_id uuid) returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.api_token(p_token, 'org', p_org);
  perform pgvpd.invite_revoke(p_org, p_id);
end;
$$;

create or replace function pgvpd.api_org_allow_role(p_token text, p_org uuid, p_role name) returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.api_token(p_token, 'operator', null);
  return pgvpd.org_allow_role(p_org, p_role);
end;
$$;

create or replace function pgvpd.api_org_disallow_role(p_token text, p_org uuid, p_role name) returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.api_token(p_token, 'operator', null);
  return pgvpd.org_disallow_role(p_org, p_role);
end;
$$;

-- For the public validate route: whether the org with this database name is active; no row when
-- there is none. 22023 for a name no org could have.
create or replace function pgvpd.org_validate(p_database_name text)
returns table (database_name text, active boolean)
language plpgsql stable security definer set search_path = ''
as $$
begin
  if p_database_name is null or p_database_name !~ '^[a-z0-9][a-z0-9_-]{0,62}$' then
    raise exception using errcode = '22023', message = pg_catalog.format('pgvpd: invalid database name %L', p_database_name),
      hint = 'database names match ^[a-z0-9][a-z0-9_-]{0,62}$';
  end if;
  return query select o.database_name, o.status = 'active' from pgvpd_private.orgs o where o.database_name = p_database_name;
end;
$$;

--! split: 7-privileges.sql
-- The control plane, part 7: ownership and EXECUTE (as 000005's 7-privileges).
-- Why: functions are executable by PUBLIC when created. The plain token, invite and allowed-role
-- functions are pgvpd_admin's (the CLI, operators); pgvpd_api gets the token-gated pgvpd.api_*
-- functions and the three public ones (invite_info, invite_redeem, org_validate), and nothing
-- else of pgvpd's but what PUBLIC has (the accessors and reports, which fail closed or only
-- report). The tables are pgvpd_admin's and nobody else's.

do $$
declare
  v_obj record;
begin
  for v_obj in
    select 'function' as kind, p.oid::regprocedure::text as name
      from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
     where n.nspname in ('pgvpd', 'pgvpd_private') and p.proowner <> 'pgvpd_admin'::regrole
    union all
    select 'table', c.oid::regclass::text
      from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where n.nspname in ('pgvpd', 'pgvpd_private') and c.relkind in ('r', 'p', 'v', 'S')
       and c.relowner <> 'pgvpd_admin'::regrole
  loop
    execute format('alter %s %s owner to pgvpd_admin', v_obj.kind, v_obj.name);
  end loop;
end;
$$;

revoke all on all functions in schema pgvpd_private from public;
revoke all on all tables in schema pgvpd_private from public;
revoke all on function
  pgvpd.org_create(text, text, text, text, text, uuid),
  pgvpd.token_create(text, uuid, text, interval), pgvpd.tokens(uuid), pgvpd.token_revoke(uuid),
  pgvpd.invite_create(uuid, text, name, interval), pgvpd.invites(uuid), pgvpd.invite_revoke(uuid, uuid),
  pgvpd.prune_invites(interval),
  pgvpd.org_allow_role(uuid, name), pgvpd.org_disallow_role(uuid, name), pgvpd.org_allowed_roles(uuid),
  pgvpd.api_authorize(text, text, uuid),
  pgvpd.api_org_provision(text, uuid, text, text, text, text, text), pgvpd.api_org_get(text, uuid),
  pgvpd.api_org_set_status(text, uuid, text), pgvpd.api_org_remove(text, uuid),
  pgvpd.api_name_available(text, text),
  pgvpd.api_users(text, uuid), pgvpd.api_user_get(text, uuid, text),
  pgvpd.api_user_put(text, uuid, text, text, name), pgvpd.api_user_remove(text, uuid, text),
  pgvpd.api_invite_create(text, uuid, text, name, interval), pgvpd.api_invites(text, uuid),
  pgvpd.api_invite_revoke(text, uuid, uuid),
  pgvpd.api_org_allow_role(text, uuid, name), pgvpd.api_org_disallow_role(text, uuid, name),
  pgvpd.invite_info(text), pgvpd.invite_redeem(text, text), pgvpd.org_validate(text)
  from public;

-- Operators and the CLI.
grant execute on function
  pgvpd.org_create(text, text, text, text, text, uuid),
  pgvpd.token_create(text, uuid, text, interval), pgvpd.tokens(uuid), pgvpd.token_revoke(uuid),
  pgvpd.invite_create(uuid, text, name, interval), pgvpd.invites(uuid), pgvpd.invite_revoke(uuid, uuid),
  pgvpd.prune_invites(interval),
  pgvpd.org_allow_role(uuid, name), pgvpd.org_disallow_role(uuid, name), pgvpd.org_allowed_roles(uuid)
  to pgvpd_admin;
-- The HTTP server's login, a member of pgvpd_api.
grant execute on function
  pgvpd.api_authorize(text, text, uuid),
  pgvpd.api_org_provision(text, uuid, text, text, text, text, text), pgvpd.api_org_get(text, uuid),
  pgvpd.api_org_set_status(text, uuid, text), pgvpd.api_org_remove(text, uuid),
  pgvpd.api_name_available(text, text),
  pgvpd.api_users(text, uuid), pgvpd.api_user_get(text, uuid, text),
  pgvpd.api_user_put(text, uuid, text, text, name), pgvpd.api_user_remove(text, uuid, text),
  pgvpd.api_invite_create(text, uuid, text, name, interval), pgvpd.api_invites(text, uuid),
  pgvpd.api_invite_revoke(text, uuid, uuid),
  pgvpd.api_org_allow_role(text, uuid, name), pgvpd.api_org_disallow_role(text, uuid, name),
  pgvpd.invite_info(text), pgvpd.invite_redeem(text, text), pgvpd.org_validate(text)
  to pgvpd_api;
