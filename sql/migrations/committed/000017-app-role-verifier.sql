--! Previous: sha1:4d8c7cad222ae67645985090baeafffcde633d75
--! Hash: sha1:16a312716e0522ff680b67f62f297e5a5fe1e373
--! Message: app role verifier

--! split: 1-app-role-verifier.sql
-- The SCRAM verifier of an application role, for the proxy's pooled app mode
-- (docs/app-mode.md, "Pooling").
-- Why: to pool app-mode connections the proxy authenticates the client itself, against the
-- role's own SCRAM verifier, and logs in upstream with the ClientKey the client's proof gives
-- it (SCRAM pass-through), so that it stores no password. PgBouncer's auth_query does the same
-- job and is where CVE-2025-12819 came from (an unqualified query that a client's startup
-- search_path could redirect): here the lookup is one function that takes the role name as a
-- parameter, pins an empty search_path and qualifies every name.
-- Guarantees:
--   - Only pgvpd_proxy may execute it. It reads pg_authid, so its owner must be a superuser: it
--     keeps the owner setup ran as (a superuser); under any other owner a call fails with 42501.
--   - A verifier comes back only for a registered application role (pgvpd.add_app_role) that is
--     LOGIN, whose password has not expired (VALID UNTIL), NOSUPERUSER, NOBYPASSRLS, a member
--     of no role that is a superuser, has BYPASSRLS or is one of pgvpd's own roles, and no org's
--     connect_as role. Any other name, known to the server or not, gets (null, null): an unknown
--     role and one that may not be served look the same, and the proxy answers both as a wrong
--     password.
--   - An eligible role whose password is not a SCRAM-SHA-256 verifier gets a null verifier and a
--     problem: 'md5' (stored as MD5) or 'no password', for the FATAL that names the fix.

create or replace function pgvpd.app_role_verifier(p_role text, out verifier text, out problem text)
language sql stable security definer set search_path = ''
as $$
  select case when a.rolpassword like 'SCRAM-SHA-256$%' then a.rolpassword end,
         case when a.rolpassword is null then 'no password'
              when a.rolpassword like 'SCRAM-SHA-256$%' then null
              else 'md5' end
    from pg_catalog.pg_authid a
   where a.rolname = p_role
     and a.rolcanlogin and not a.rolsuper and not a.rolbypassrls
     and (a.rolvaliduntil is null or a.rolvaliduntil > pg_catalog.now())
     and exists (select 1 from pgvpd_private.app_role r where r.role_name = a.rolname)
     and not exists (select 1 from pgvpd_private.org_users u where u.connect_as = a.rolname)
     and not exists (
       select 1 from pg_catalog.pg_roles x
        where (x.rolsuper or x.rolbypassrls or x.rolname in ('pgvpd_admin', 'pgvpd_proxy', 'pgvpd_api'))
          and pg_catalog.pg_has_role(a.oid, x.oid, 'MEMBER'))
$$;
-- Owned by whoever runs setup (a superuser), never by pgvpd_admin like the rest of pgvpd: the
-- blanket ownership blocks of earlier migrations (000001, 000005, 000008, 000009, 000011, 000013) hand every
-- pgvpd function to pgvpd_admin when setup.sql runs again, so the owner is set back here, after
-- them. A later migration with such a block must leave this function out.
alter function pgvpd.app_role_verifier(text) owner to current_user;
revoke all on function pgvpd.app_role_verifier(text) from public;
grant execute on function pgvpd.app_role_verifier(text) to pgvpd_proxy;
