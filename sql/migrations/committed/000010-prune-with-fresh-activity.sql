--! Previous: sha1:4f346fe2415236f8644384a5fe18212f7d646ff8
--! Hash: sha1:ddd8a80706fedfddf0989515441d374ebd42c476
--! Message: prune with fresh activity

--! split: 1-prune-with-fresh-activity.sql
-- prune_contexts reads backend activity as it is now, not as the transaction first saw it.
-- Why: PostgreSQL caches what pg_stat_activity (and pg_stat_get_activity) report for the rest of a
-- transaction once it is first read (stats_fetch_consistency). issue_context looks up its backend
-- that way, then now and then prunes in the same transaction; a backend that started after that
-- look-up, and whose record another control connection committed meanwhile, was missing from the
-- cached activity, so its fresh record was deleted as if the backend had ended, and the proxy's
-- set_context on it failed with "context token is no longer current for this backend" (seen under
-- connection churn). The cache is dropped before the delete, so activity is read after the delete's
-- own snapshot: every record the delete can see belongs to a backend that started before it.
-- Guarantees: a record is pruned only if its backend has ended or its pid belongs to a newer
-- backend, whatever the calling transaction read before.

create or replace function pgvpd.prune_contexts() returns integer
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_count integer;
begin
  perform pg_catalog.pg_stat_clear_snapshot();
  delete from pgvpd_private.session_context c
   where c.pid <> pg_catalog.pg_backend_pid()
     and not exists (
       select 1 from pg_catalog.pg_stat_activity a
        where a.pid = c.pid and (c.backend_start is null or a.backend_start = c.backend_start));
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;
