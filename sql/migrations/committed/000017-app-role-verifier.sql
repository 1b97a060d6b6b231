--! Previous: sha1:4d8c7cad222ae67645985090baeafffcde633d75
--! Hash: sha1:a90fac9f50db5a26cc981da7b822f1402fc487b2
--! Message: app role verifier

--! split: 1-app-role-verifier.sql
-- The SCRAM verifier of an application role, for the proxy's pooled app mode.
-- Why: to pool app-mode connections the proxy authenticates the client itself, against the
-- role's own SCRAM verifier, and logs in upstream with the ClientKey the client's proof gives
-- it (SCRAM pass-through), so that it stores no password. PgBouncer's auth_query does the same
-- job and is where CVE-2025-12819 came from (an unqualified query that a client's startup
-- search_path could redirect): here the lookup takes the role name as a parameter, pins an empty
-- search_path and qualifies every name.
-- Two functions, so that the lookup never runs pgvpd_admin's code as a superuser: a
-- superuser-owned function that read pgvpd_private's tables (pgvpd_admin's, with their schema)
-- would run whatever pgvpd_admin put in their place (a view calling a function of its own), since
-- a SQL function's body is resolved at each call. pgvpd_admin is trusted with pgvpd's data, not
-- with superuser. (The first version of this migration, never released, had that hole; a
-- security review found it.)
-- Guarantees:
--   - pgvpd_private.role_scram_verifier(role) is the only superuser-owned function of pgvpd. It
--     reads only pg_catalog (pg_authid, pg_roles, pg_has_role, now), all qualified, and applies
--     the server-side conditions: LOGIN, password not past VALID UNTIL, a member of pgvpd_tenant
--     (registered somewhere as a tenant role), NOSUPERUSER, NOBYPASSRLS, NOCREATEROLE,
--     NOREPLICATION, and a member of no role that is any of those or is one of pgvpd's own or of
--     the predefined roles that reach the server's files, programs or every table. Only
--     pgvpd_admin may execute it. Made by a role that is not a superuser it fails with 42501
--     (setup runs as a superuser).
--   - pgvpd.app_role_verifier(role) is pgvpd_admin's, like the rest of pgvpd, EXECUTE for
--     pgvpd_proxy only. It adds pgvpd's own conditions (a registered application role,
--     pgvpd.add_app_role; no org's connect_as role) and returns (verifier, problem): the role's
--     SCRAM-SHA-256 verifier; for any other name, known to the server or not, (null, null), so
--     that an unknown role and one that may not be served look the same and the proxy answers
--     both as a wrong password; for an eligible role whose password is not a SCRAM verifier, a
--     null verifier and the problem, 'md5' or 'no password', for the FATAL that names the fix.

-- Dropped and made again at every setup, so that it is the superuser's with no grant but
-- pgvpd_admin's: the blanket "owner to pgvpd_admin" blocks of earlier migrations (000001, 000005,
-- 000008, 000009, 000011, 000013) hand every pgvpd function to pgvpd_admin when setup.sql runs
-- again, and pgvpd_admin, owner of the schema, could have replaced it with its own and granted
-- it to others meanwhile. (A SQL function's body records no dependency: app_role_verifier
-- survives the drop.) A later migration with such a block must leave this function out.
drop function if exists pgvpd_private.role_scram_verifier(text);
create function pgvpd_private.role_scram_verifier(p_role text, out verifier text, out problem text)
language sql stable security definer set search_path = ''
as $$
  select case when a.rolpassword like 'SCRAM-SHA-256$%' then a.rolpassword end,
         case when a.rolpassword is null then 'no password'
              when a.rolpassword like 'SCRAM-SHA-256$%' then null
              else 'md5' end
    from pg_catalog.pg_authid a
   where a.rolname = p_role
     and a.rolcanlogin and not a.rolsuper and not a.rolbypassrls
     and not a.rolcreaterole and not a.rolreplication
     and (a.rolvaliduntil is null or a.rolvaliduntil > pg_catalog.now())
     and exists (
       select 1 from pg_catalog.pg_roles t
        where t.rolname = 'pgvpd_tenant' and pg_catalog.pg_has_role(a.oid, t.oid, 'MEMBER'))
     and not exists (
       select 1 from pg_catalog.pg_roles x
        where (x.rolsuper or x.rolbypassrls or x.rolcreaterole or x.rolreplication
               or x.rolname in ('pgvpd_admin', 'pgvpd_proxy', 'pgvpd_api',
                                'pg_execute_server_program', 'pg_read_server_files',
                                'pg_write_server_files', 'pg_read_all_data', 'pg_write_all_data'))
          and pg_catalog.pg_has_role(a.oid, x.oid, 'MEMBER'))
$$;
revoke all on function pgvpd_private.role_scram_verifier(text) from public;
grant execute on function pgvpd_private.role_scram_verifier(text) to pgvpd_admin;

create or replace function pgvpd.app_role_verifier(p_role text, out verifier text, out problem text)
language sql stable security definer set search_path = ''
as $$
  select v.verifier, v.problem
    from pgvpd_private.role_scram_verifier(p_role) v
   where exists (select 1 from pgvpd_private.app_role r where r.role_name = p_role)
     and not exists (select 1 from pgvpd_private.org_users u where u.connect_as = p_role)
$$;
alter function pgvpd.app_role_verifier(text) owner to pgvpd_admin;
revoke all on function pgvpd.app_role_verifier(text) from public;
grant execute on function pgvpd.app_role_verifier(text) to pgvpd_proxy;
