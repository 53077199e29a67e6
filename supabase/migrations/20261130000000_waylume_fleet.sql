-- Waylume fleet: one row per VPN node (`waylume_servers`), one row per peer session
-- (`vpn_sessions`), and what a node summarised when its outbox overflowed
-- (`waylume_usage_summaries`).
--
-- Idempotent and upgrade-safe: it runs on an empty project, on a project that already has the
-- earlier Dart server's `waylume_servers`/`vpn_sessions`, and on one where an earlier version of
-- this file ran. Tables and columns are only added when missing, constraints only when no
-- constraint of that name exists, and nothing is dropped except this project's own earlier unique
-- key on (server_id, peer_public_key). Rows already present stay; new CHECK constraints are added
-- NOT VALID so they bind new and updated rows without rejecting old ones.
--
-- Nodes write with the project's secret (service_role) key. Row level security is on with no
-- policies, so anon and authenticated see nothing even if a grant slips in; service_role
-- bypasses RLS.

-- Runs `sql` unless the table already has a constraint named `name`.
create or replace function pg_temp.waylume_constraint(tbl regclass, name text, sql text)
returns void language plpgsql as $$
begin
    if not exists (select 1 from pg_constraint where conrelid = tbl and conname = name) then
        execute format('alter table %s add constraint %I %s', tbl, name, sql);
    end if;
end;
$$;

-- ---------------------------------------------------------------------------------------------
-- Servers
create table if not exists public.waylume_servers (
    id text primary key
);
alter table public.waylume_servers
    -- host:port that client configs name as `Endpoint`; its host is also the name the node API's
    -- TLS certificate must carry when Edge Functions call it over https
    add column if not exists endpoint       text,
    -- null when the endpoint is a DNS name the node did not resolve
    add column if not exists public_ip      inet,
    add column if not exists wg_port        integer,
    add column if not exists api_port       integer,
    -- base64 of a 32-byte x25519 public key
    add column if not exists wg_public_key  text,
    add column if not exists country        text,
    add column if not exists city           text,
    add column if not exists lat            double precision,
    add column if not exists lon            double precision,
    add column if not exists max_capacity   int2 not null default 1000,
    -- peers with a WireGuard handshake in the last 180 seconds
    add column if not exists current_load   integer not null default 0,
    -- peers configured on the node: what Edge Functions balance on
    add column if not exists peer_count     integer not null default 0,
    -- 'online' and 'offline' are written by the node; 'draining' only by an operator, and the
    -- node's writes never change it (see waylume_servers_guard)
    add column if not exists status         text not null default 'offline',
    -- false while the node itself cannot take new peers (full, data plane degraded)
    add column if not exists accepting      boolean not null default true,
    add column if not exists version        text,
    -- how often the node promises a heartbeat; a row older than three of these is stale
    add column if not exists heartbeat_interval_s integer not null default 30,
    -- the database's clock at the node's last write, never the node's own clock
    add column if not exists last_heartbeat timestamptz not null default now(),
    add column if not exists created_at     timestamptz not null default now(),
    add column if not exists updated_at     timestamptz not null default now();

select pg_temp.waylume_constraint('public.waylume_servers', 'waylume_servers_id_check',
    $$check (id ~ '^[A-Za-z0-9._~-]{1,64}$') not valid$$);
select pg_temp.waylume_constraint('public.waylume_servers', 'waylume_servers_endpoint_check',
    $$check (char_length(endpoint) between 3 and 270) not valid$$);
select pg_temp.waylume_constraint('public.waylume_servers', 'waylume_servers_ports_check',
    $$check (wg_port between 1 and 65535 and api_port between 1 and 65535) not valid$$);
select pg_temp.waylume_constraint('public.waylume_servers', 'waylume_servers_wg_public_key_check',
    $$check (wg_public_key ~ '^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$') not valid$$);
select pg_temp.waylume_constraint('public.waylume_servers', 'waylume_servers_place_check',
    $$check (char_length(country) <= 100 and char_length(city) <= 100
             and lat between -90 and 90 and lon between -180 and 180) not valid$$);
select pg_temp.waylume_constraint('public.waylume_servers', 'waylume_servers_load_check',
    $$check (max_capacity between 1 and 32767 and current_load >= 0 and peer_count >= 0
             and heartbeat_interval_s between 1 and 3600) not valid$$);
select pg_temp.waylume_constraint('public.waylume_servers', 'waylume_servers_status_check',
    $$check (status in ('online', 'draining', 'offline')) not valid$$);
select pg_temp.waylume_constraint('public.waylume_servers', 'waylume_servers_version_check',
    $$check (char_length(version) between 1 and 64) not valid$$);
-- A node's own rows always carry what clients and Edge Functions need; rows the earlier server
-- left behind are offline until their node registers again.
select pg_temp.waylume_constraint('public.waylume_servers', 'waylume_servers_online_complete',
    $$check (status <> 'online' or (endpoint is not null and wg_port is not null
             and api_port is not null and wg_public_key is not null)) not valid$$);

create index if not exists waylume_servers_pick
    on public.waylume_servers (status, last_heartbeat);

-- The database owns the clock: any write that carries `last_heartbeat` is the node's (its
-- registration, heartbeat or offline mark) and gets now(); an operator's edit that leaves
-- `last_heartbeat` alone keeps it. A node's write never changes an operator's `draining`.
create or replace function public.waylume_servers_guard() returns trigger
language plpgsql
set search_path = ''
as $$
begin
    if tg_op = 'INSERT' then
        new.last_heartbeat := now();
        new.created_at := now();
    elsif new.last_heartbeat is distinct from old.last_heartbeat then
        new.last_heartbeat := now();
        if old.status = 'draining' then
            new.status := 'draining';
        end if;
    end if;
    new.updated_at := now();
    return new;
end;
$$;

drop trigger if exists waylume_servers_touch on public.waylume_servers;
drop trigger if exists waylume_servers_guard on public.waylume_servers;
create trigger waylume_servers_guard before insert or update on public.waylume_servers
    for each row execute function public.waylume_servers_guard();

-- Nodes an Edge Function may give a new session to: online, not draining, taking peers, heard
-- from within three of their heartbeat intervals, and below capacity. security_invoker: callers
-- see only what their own grants allow.
create or replace view public.waylume_available_servers
with (security_invoker = true) as
select id, endpoint, api_port, wg_public_key, country, city, lat, lon,
       peer_count, current_load, max_capacity, last_heartbeat
  from public.waylume_servers
 where status = 'online'
   and accepting
   and endpoint is not null and api_port is not null
   and last_heartbeat > now() - make_interval(secs => 3 * heartbeat_interval_s)
   and peer_count < max_capacity;

-- For a scheduled job (pg_cron) or an operator: marks rows `offline` whose node went silent
-- for three heartbeat intervals (crashed, cut off). Returns how many. It leaves
-- `last_heartbeat` alone, so the guard treats it as an operator's edit.
create or replace function public.waylume_mark_stale_offline() returns integer
language sql
set search_path = ''
as $$
    with stale as (
        update public.waylume_servers set status = 'offline'
         where status = 'online'
           and last_heartbeat <= now() - make_interval(secs => 3 * heartbeat_interval_s)
        returning 1
    )
    select count(*)::integer from stale;
$$;

-- ---------------------------------------------------------------------------------------------
-- Sessions: one row per peer session, keyed by the node's peer id. A public key is not a
-- session: apps that bring their own key reuse it, and each session keeps its own totals.
create table if not exists public.vpn_sessions (
    id uuid primary key default gen_random_uuid()
);
alter table public.vpn_sessions
    add column if not exists server_id       text,
    add column if not exists peer_public_key text,
    add column if not exists peer_id         text,
    add column if not exists session_id      text,
    add column if not exists user_id         text,
    -- absolute totals since the peer was created (the node keeps a baseline across restarts
    -- and interface re-creation), so a repeated report is idempotent
    add column if not exists rx_bytes        bigint not null default 0,
    add column if not exists tx_bytes        bigint not null default 0,
    -- bytes per classified protocol, e.g. {"tls": 1200, "bittorrent": 0}
    add column if not exists protocol_bytes  jsonb not null default '{}'::jsonb,
    add column if not exists bittorrent      boolean not null default false,
    add column if not exists status          text,
    add column if not exists last_handshake  timestamptz,
    add column if not exists created_at      timestamptz not null default now(),
    add column if not exists updated_at      timestamptz not null default now();

-- This project's earlier key made a reused public key overwrite the older session's row.
alter table public.vpn_sessions drop constraint if exists vpn_sessions_server_peer;

select pg_temp.waylume_constraint('public.vpn_sessions', 'vpn_sessions_server_peer_id',
    'unique (server_id, peer_id)');
-- Removing a server row removes its sessions; a running node re-registers and re-sends its
-- absolute counters, so nothing live is lost.
select pg_temp.waylume_constraint('public.vpn_sessions', 'vpn_sessions_server_id_fkey',
    $$foreign key (server_id) references public.waylume_servers (id) on delete cascade not valid$$);
select pg_temp.waylume_constraint('public.vpn_sessions', 'vpn_sessions_peer_check',
    $$check (peer_public_key ~ '^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$'
             and char_length(peer_id) between 1 and 64) not valid$$);
select pg_temp.waylume_constraint('public.vpn_sessions', 'vpn_sessions_text_check',
    $$check (char_length(session_id) <= 200 and char_length(user_id) <= 200) not valid$$);
select pg_temp.waylume_constraint('public.vpn_sessions', 'vpn_sessions_bytes_check',
    $$check (rx_bytes >= 0 and tx_bytes >= 0 and jsonb_typeof(protocol_bytes) = 'object')
      not valid$$);
select pg_temp.waylume_constraint('public.vpn_sessions', 'vpn_sessions_status_check',
    $$check (status in ('active', 'capped', 'expired', 'idle', 'deleted')) not valid$$);

create index if not exists vpn_sessions_user
    on public.vpn_sessions (user_id) where user_id is not null;
create index if not exists vpn_sessions_session
    on public.vpn_sessions (session_id) where session_id is not null;

-- ---------------------------------------------------------------------------------------------
-- When a node's outbox is full (Supabase unreachable for a very long time), its oldest final
-- session rows are folded into one summary row here instead of being dropped.
create table if not exists public.waylume_usage_summaries (
    server_id        text not null references public.waylume_servers (id) on delete cascade,
    id               text not null check (char_length(id) between 1 and 64),
    sessions         integer not null check (sessions >= 0),
    rx_bytes         bigint not null check (rx_bytes >= 0),
    tx_bytes         bigint not null check (tx_bytes >= 0),
    first_removed_at timestamptz,
    last_removed_at  timestamptz,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    primary key (server_id, id)
);

create or replace function public.waylume_touch_updated_at() returns trigger
language plpgsql
set search_path = ''
as $$
begin
    new.updated_at := now();
    return new;
end;
$$;

drop trigger if exists vpn_sessions_touch on public.vpn_sessions;
create trigger vpn_sessions_touch before update on public.vpn_sessions
    for each row execute function public.waylume_touch_updated_at();
drop trigger if exists waylume_usage_summaries_touch on public.waylume_usage_summaries;
create trigger waylume_usage_summaries_touch before update on public.waylume_usage_summaries
    for each row execute function public.waylume_touch_updated_at();

-- ---------------------------------------------------------------------------------------------
-- Access: service_role only.
alter table public.waylume_servers enable row level security;
alter table public.vpn_sessions enable row level security;
alter table public.waylume_usage_summaries enable row level security;

revoke all on table public.waylume_servers, public.vpn_sessions, public.waylume_usage_summaries,
    public.waylume_available_servers from public, anon, authenticated;
grant select, insert, update, delete on table public.waylume_servers, public.vpn_sessions,
    public.waylume_usage_summaries to service_role;
grant select on table public.waylume_available_servers to service_role;

revoke all on function public.waylume_touch_updated_at(), public.waylume_servers_guard(),
    public.waylume_mark_stale_offline() from public, anon, authenticated;
grant execute on function public.waylume_mark_stale_offline() to service_role;
