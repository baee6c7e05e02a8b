#!/usr/bin/env bash
# The request path under load, from a second process: a release broker on
# SQLite with N stored instances, driven by wrk. Also start-up time and RSS
# with 100,000 stored instances. Run through `./dev load` (needs .dev/env).
#
#   benches/load.sh [INSTANCES=10000] [SECONDS=10] [CONNECTIONS=32]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INSTANCES="${1:-10000}"
SECONDS_EACH="${2:-10}"
CONNECTIONS="${3:-32}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/domain-broker"
WORK="$(mktemp -d)"
BROKER_PID=""
trap '[[ -n "$BROKER_PID" ]] && kill "$BROKER_PID" 2>/dev/null; rm -rf "$WORK"' EXIT

command -v wrk >/dev/null || { echo "load: wrk is missing (apt-get install wrk)" >&2; exit 1; }
cargo build --release --bin domain-broker >&2

# Stored instances, each with a finished provision, written straight into a
# migrated database.
seed() { # database count
  DATABASE_URL="sqlite://$1" "$BIN" migrate >/dev/null
  sqlite3 "$1" >/dev/null <<SQL
PRAGMA journal_mode = WAL;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $2)
INSERT INTO service_instances (id, service_id, plan_id, organization_guid, space_guid,
    context, parameters, domains, state, current_certificate_id, created_at, updated_at)
SELECT 'load-' || i, '8c16de31-104a-47b0-ba79-25e747be91d6', '2fd4db4f-9a61-4f5f-8ecc-4457bd823d61',
    'org', 'space', NULL, '{"domains":"d' || i || '.example.com"}', '["d' || i || '.example.com"]',
    'provisioned', NULL, strftime('%Y-%m-%d %H:%M:%f', 'now'), strftime('%Y-%m-%d %H:%M:%f', 'now')
FROM n;
INSERT INTO operations (id, instance_id, kind, state, next_step, attempts, next_attempt_at,
    description, last_error, request, created_at, updated_at, finished_at)
SELECT 'op-' || id, id, 'provision', 'succeeded', 9, 0, created_at,
    'The certificate has been issued and is ready.', NULL, '{}', created_at, created_at, created_at
FROM service_instances;
INSERT INTO instance_domains (domain, instance_id)
SELECT 'd' || substr(id, 6) || '.example.com', id FROM service_instances;
SQL
}

now_ms() { date +%s%3N; }

# Starts the broker on $1; sets ADDR, BROKER_PID and STARTUP_MS (until it
# listens).
start() { # database
  local port began
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  ADDR="127.0.0.1:$port"
  began=$(now_ms)
  BROKER_ADDR="$ADDR" DATABASE_URL="sqlite://$1" BROKER_USERNAME=load BROKER_PASSWORD=load \
    RUST_LOG=warn "$BIN" serve >"$WORK/broker.log" 2>&1 &
  BROKER_PID=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.005; done
  STARTUP_MS=$(( $(now_ms) - began ))
}

rss_mib() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$BROKER_PID/status"; }

stop() { kill "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true; BROKER_PID=""; }

cat >"$WORK/last_operation.lua" <<LUA
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/v2/service_instances/load-" .. math.random(0, $INSTANCES - 1) .. "/last_operation")
end
LUA

drive() { # name url [script]
  local auth
  auth="Authorization: Basic $(printf 'load:load' | base64)"
  echo "== $1: wrk -t1 -c$CONNECTIONS -d${SECONDS_EACH}s"
  wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" --latency -H "$auth" \
    -H 'X-Broker-API-Version: 2.17' ${3:+-s "$3"} "$2" \
    | grep -E 'Requests/sec|^ +(50|99)%|Non-2xx|Socket errors'
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -r)"
seed "$WORK/load.sqlite" "$INSTANCES"
start "$WORK/load.sqlite"
echo "instances: $INSTANCES; start-up: ${STARTUP_MS} ms; RSS after start: $(rss_mib) MiB"
drive "last_operation (random instance)" "http://$ADDR/v2/service_instances/load-0/last_operation" "$WORK/last_operation.lua"
drive "catalog" "http://$ADDR/v2/catalog"
echo "RSS after load: $(rss_mib) MiB"
stop

seed "$WORK/big.sqlite" 100000
start "$WORK/big.sqlite"
sleep 1
echo "instances: 100000; start-up: ${STARTUP_MS} ms; RSS after start: $(rss_mib) MiB"
stop
