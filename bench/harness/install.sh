#!/usr/bin/env bash
# Installs the benchmark's tools, each by name from its registry, and only when
# missing, so a second run installs nothing:
#   apt-get: nginx, wrk, haproxy (bench/scale), and PostgreSQL's server when none is found;
#   cargo:   oha, into $BENCH_CACHE/cargo;
#   npm:     @portkey-ai/gateway, into $BENCH_CACHE/portkey;
#   pip:     litellm[proxy], into the venv $BENCH_CACHE/litellm-venv.
# A peer that fails to install is reported and skipped by the run, not fatal.
set -uo pipefail

: "${BENCH_CACHE:?set by bench/run}"
OHA_VERSION="${OHA_VERSION:-1.16.0}"
PORTKEY_VERSION="1.15.2"
LITELLM_VERSION="1.106.2"

log() { echo "bench/install: $*" >&2; }

have_pg_server() {
  [ -n "${OBLETH_PG_BINDIR:-}" ] && [ -x "$OBLETH_PG_BINDIR/initdb" ] && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && return 0
  command -v initdb >/dev/null 2>&1
}

apt_packages=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt_packages+=(nginx)
command -v wrk >/dev/null 2>&1 || apt_packages+=(wrk)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || apt_packages+=(haproxy)
have_pg_server || apt_packages+=(postgresql)
command -v psql >/dev/null 2>&1 || apt_packages+=(postgresql-client)
if [ "${#apt_packages[@]}" -gt 0 ]; then
  log "apt-get install ${apt_packages[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${apt_packages[@]}" >/dev/null || { log "apt-get failed"; exit 1; }
fi

mkdir -p "$BENCH_CACHE"

if [ ! -x "$BENCH_CACHE/cargo/bin/oha" ]; then
  log "cargo install oha $OHA_VERSION (a few minutes on 2 cores)"
  nice cargo install oha --version "$OHA_VERSION" --locked --root "$BENCH_CACHE/cargo" >&2 \
    || { log "cargo install oha failed"; exit 1; }
fi

portkey_dir="$BENCH_CACHE/portkey"
portkey_pkg="$portkey_dir/node_modules/@portkey-ai/gateway/package.json"
if ! grep -q "\"version\": \"$PORTKEY_VERSION\"" "$portkey_pkg" 2>/dev/null; then
  if command -v npm >/dev/null 2>&1; then
    log "npm install @portkey-ai/gateway@$PORTKEY_VERSION"
    mkdir -p "$portkey_dir"
    (cd "$portkey_dir" && npm install --no-audit --no-fund --loglevel=error \
      "@portkey-ai/gateway@$PORTKEY_VERSION" >&2) || log "npm install failed; Portkey is skipped"
  else
    log "npm not found; Portkey is skipped"
  fi
fi

venv="$BENCH_CACHE/litellm-venv"
if ! "$venv/bin/python" -c "import importlib.metadata as m; assert m.version('litellm') == '$LITELLM_VERSION'" 2>/dev/null; then
  log "pip install litellm[proxy]==$LITELLM_VERSION into $venv"
  { python3 -m venv "$venv" && "$venv/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION" >&2; } \
    || log "pip install failed; LiteLLM is skipped"
fi
exit 0
