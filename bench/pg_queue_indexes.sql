-- What a queue row's indexes cost PostgreSQL: 100 000 claims and 100 000 outcomes, 1 000 ids
-- an UPDATE, on a table shaped like deliveries. bench/README.md, round 11. Run with the
-- extra indexes to try, e.g.:
--   psql "$URL" -v extra='create index co on d(status,next_attempt_at,digest_id,id);
--     create index es on d(edition_id,status);' -f bench/pg_queue_indexes.sql
-- (extra='alter table d drop constraint uq;' leaves the primary key alone)
\timing off
set client_min_messages = warning;
drop table if exists d;
create table d (id serial primary key, subscriber_id int not null, edition_id int not null, digest_id int, status varchar(10) not null, due_at timestamptz not null, next_attempt_at timestamptz not null, lease_expires_at timestamptz, claimed_by varchar(80), attempts int not null default 0, sent_at timestamptz, smtp_reply varchar(500), message_id varchar(300), last_error varchar(1000), created_at timestamptz not null default now());
insert into d (subscriber_id, edition_id, digest_id, status, due_at, next_attempt_at) select g, 2, g % 2000, 'queued', now(), now() from generate_series(1,100000) g;
alter table d add constraint uq unique (subscriber_id, edition_id);
:extra
vacuum analyze d;
\timing on
do $$ declare i int; begin for i in 0..99 loop
  update d set status='sending', lease_expires_at=now()+interval '5 min', claimed_by='w1', attempts=attempts+1 where id = any(array(select generate_series(i*1000+1, i*1000+1000)));
end loop; end $$;
do $$ declare i int; begin for i in 0..99 loop
  update d set status='sent', lease_expires_at=null, sent_at=now(), smtp_reply='250 2.0.0 Ok: queued as ABCDEF', message_id='<daily.2026-11-30.123456.abcdefgh@news.example.com>' where id = any(array(select generate_series(i*1000+1, i*1000+1000)));
end loop; end $$;
