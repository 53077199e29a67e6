-- Waylume fleet tables: one row per VPN node and one row per peer session on a node.
--
-- Nodes write with the project's secret (service_role) key. The tables have row level security
-- enabled and no policies, so the anon and authenticated roles see nothing even if a grant slips
-- in; service_role bypasses RLS. Supabase grants every new table in `public` to anon and
-- authenticated by default, which is why the grants are revoked explicitly below.

create table public.waylume_servers (
    id             text primary key
                   check (id ~ '^[A-Za-z0-9._~-]{1,64}$'),
    -- host:port that client configs name as `Endpoint`
    endpoint       text not null check (char_length(endpoint) between 3 and 270),
    -- null when the endpoint is a DNS name the node did not resolve
    public_ip      inet,
    wg_port        integer not null check (wg_port between 1 and 65535),
    api_port       integer not null check (api_port between 1 and 65535),
    -- base64 of a 32-byte x25519 public key
    wg_public_key  text not null check (wg_public_key ~ '^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$'),
    country        text check (char_length(country) <= 100),
    city           text check (char_length(city) <= 100),
    lat            double precision check (lat between -90 and 90),
    lon            double precision check (lon between -180 and 180),
    max_capacity   int2 not null check (max_capacity between 1 and 32767),
    -- peers with a WireGuard handshake in the last 180 seconds
    current_load   integer not null default 0 check (current_load >= 0),
    peer_count     integer not null default 0 check (peer_count >= 0),
    status         text not null default 'offline'
                   check (status in ('online', 'draining', 'offline')),
    version        text not null check (char_length(version) between 1 and 64),
    -- node clock; readers compare it with now() minus a few heartbeat intervals
    last_heartbeat timestamptz not null,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now()
);

-- Edge Functions pick servers by status and heartbeat freshness.
create index waylume_servers_pick on public.waylume_servers (status, last_heartbeat);

create table public.vpn_sessions (
    -- removing a server row removes its sessions; a running node re-registers and re-sends its
    -- absolute counters on the next report, so nothing live is lost
    server_id       text not null references public.waylume_servers (id) on delete cascade,
    peer_public_key text not null check (peer_public_key ~ '^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$'),
    peer_id         text not null check (char_length(peer_id) between 1 and 64),
    session_id      text check (char_length(session_id) <= 200),
    user_id         text check (char_length(user_id) <= 200),
    -- absolute totals since the peer was created (the node keeps a baseline across restarts and
    -- interface re-creation), so a repeated report is idempotent
    rx_bytes        bigint not null default 0 check (rx_bytes >= 0),
    tx_bytes        bigint not null default 0 check (tx_bytes >= 0),
    -- bytes per classified protocol, e.g. {"tls": 1200, "bittorrent": 0}
    protocol_bytes  jsonb not null default '{}'::jsonb
                    check (jsonb_typeof(protocol_bytes) = 'object'),
    bittorrent      boolean not null default false,
    status          text not null
                    check (status in ('active', 'capped', 'expired', 'idle', 'deleted')),
    last_handshake  timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    constraint vpn_sessions_server_peer unique (server_id, peer_public_key)
);

create index vpn_sessions_user on public.vpn_sessions (user_id) where user_id is not null;
create index vpn_sessions_session on public.vpn_sessions (session_id) where session_id is not null;

-- updated_at is the database's clock, whatever the node's clock says.
create function public.waylume_touch_updated_at() returns trigger
language plpgsql
set search_path = ''
as $$
begin
    new.updated_at := now();
    return new;
end;
$$;

create trigger waylume_servers_touch before update on public.waylume_servers
    for each row execute function public.waylume_touch_updated_at();
create trigger vpn_sessions_touch before update on public.vpn_sessions
    for each row execute function public.waylume_touch_updated_at();

alter table public.waylume_servers enable row level security;
alter table public.vpn_sessions enable row level security;

revoke all on table public.waylume_servers, public.vpn_sessions from public, anon, authenticated;
grant select, insert, update, delete on table public.waylume_servers, public.vpn_sessions
    to service_role;

revoke all on function public.waylume_touch_updated_at() from public, anon, authenticated;
