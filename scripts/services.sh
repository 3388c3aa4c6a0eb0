#!/usr/bin/env bash
# The services the test suite needs, on loopback, with their state under .run/services/.
#
#   scripts/services.sh start    install what is missing, start what is not running (idempotent)
#   scripts/services.sh stop     stop everything that is running (PostgreSQL keeps its data)
#   scripts/services.sh clean    stop, then remove all their state (PostgreSQL's data too)
#   scripts/services.sh env      print the export lines for the running services
#   scripts/services.sh status   one line per service
#
# PostgreSQL 15 listens on a unix socket only (fsync off: test data is disposable), Redis and the
# local S3 (moto, scripts/s3_local.py) on free 127.0.0.1 ports. Chromium and the test OpenID
# provider's npm packages (tests/oidc_provider/, `npm ci`) are installed, not
# started. `start` writes the export lines to .run/services/env as well:
#
#   scripts/services.sh start && . .run/services/env
#
# Missing packages (postgresql-15, redis-server, chromium) come from apt; `apt-get update` runs
# at most once per invocation, and only when something has to be installed.
set -euo pipefail
umask 022

LOG_NAME=services
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
STATE="$ROOT/.run/services"
ENV_FILE="$STATE/env"
APT_LOG="$STATE/apt.log"
VENV_PY="$ROOT/${VENV:-.venv}/bin/python"

# PostgreSQL's directory (data, socket, log): under .run/ unless the server's user cannot reach it
# (pg_paths, below); set before every use.
PG_DIR="$STATE/pg"
PG_DATA="$PG_DIR/data"
PG_LOG="$PG_DIR/postgres.log"
PG_OUTSIDE="/tmp/claudeweb-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
PG_PORT=5432 # only names the socket file: PostgreSQL does not listen on TCP here
PG_DB=claudeweb
REDIS_DIR="$STATE/redis"
S3_DIR="$STATE/s3"
S3_BUCKET="${AWS_STORAGE_BUCKET_NAME:-claudeweb}"
START_TIMEOUT_S=30

APT_UPDATED=0

# --- helpers ------------------------------------------------------------------------------------

as_root() {
	if [[ $EUID -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root (or sudo) to run: $*"
	fi
}

apt_install() {
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
	if [[ $APT_UPDATED -eq 0 ]]; then
		log "apt-get update"
		mkdir -p "$STATE"
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$APT_LOG" 2>&1 || {
			tail -n 20 "$APT_LOG" >&2
			die "apt-get update failed; see $APT_LOG"
		}
		APT_UPDATED=1
	fi
	log "apt-get install $* (log: ${APT_LOG#"$ROOT"/})"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Use-Pty=0 "$@" \
		>>"$APT_LOG" 2>&1 || {
		tail -n 20 "$APT_LOG" >&2
		die "apt-get install $* failed; see $APT_LOG"
	}
}

# SIGTERM, a bounded wait (5 s), then SIGKILL.
stop_or_kill() {
	local pid="$1" pattern="$2"
	stop_pid "$pid" "$pattern" 5 || log "pid $pid did not stop; killing it"
}

# --- PostgreSQL ---------------------------------------------------------------------------------

pg_bindir() {
	local initdb
	initdb="$(dpkg -L postgresql-15 2>/dev/null | grep '/bin/initdb$' | head -n1 || true)"
	[[ -n "$initdb" ]] && dirname "$initdb"
}

# The socket path must stay under the kernel's 107-byte limit: a deep checkout gets a short
# directory in /tmp instead, named after the checkout.
# As root the server runs as `postgres`, which cannot enter a checkout under a directory other
# users may not enter (/root, a `mktemp -d` directory): its directory then lives in /tmp, named
# after the checkout, where that user can reach it.
pg_paths() {
	PG_DIR="$STATE/pg"
	if [[ $EUID -eq 0 ]]; then
		if [[ -f "$PG_OUTSIDE/pg/data/PG_VERSION" ]]; then
			PG_DIR="$PG_OUTSIDE/pg"
		elif id postgres >/dev/null 2>&1; then
			mkdir -p "$STATE"
			(cd / && runuser -u postgres -- test -x "$STATE") 2>/dev/null || PG_DIR="$PG_OUTSIDE/pg"
		fi
	fi
	if [[ $PG_DIR == "$PG_OUTSIDE"/* ]]; then
		mkdir -p "$PG_OUTSIDE"
		chmod 755 "$PG_OUTSIDE"
	fi
	PG_DATA="$PG_DIR/data"
	PG_LOG="$PG_DIR/postgres.log"
}

pg_socket_dir() {
	local dir="$PG_DIR/sock"
	if ((${#dir} + ${#PG_PORT} + 10 > 100)); then
		dir="/tmp/claudeweb-pg-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
	fi
	printf '%s\n' "$dir"
}

# Run a PostgreSQL server binary as the user that owns the cluster: initdb refuses root.
pg_run() {
	if [[ $EUID -eq 0 ]]; then
		(cd / && runuser -u postgres -- "$@") # its user may not be able to enter the current dir
	else
		"$@"
	fi
}

pg_owner_dirs() {
	mkdir -p "$@"
	if [[ $EUID -eq 0 ]]; then
		chown postgres:postgres "$@"
	fi
}

pg_running() {
	local bin="$1"
	[[ -f "$PG_DATA/PG_VERSION" ]] && pg_run "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

pg_start() {
	local bin sock
	bin="$(pg_bindir || true)"
	if [[ -z "$bin" ]]; then
		apt_install postgresql-15
		bin="$(pg_bindir || true)"
		[[ -n "$bin" ]] || die "postgresql-15 is installed but initdb was not found"
	fi
	if [[ $EUID -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
		die "the postgres user does not exist (is postgresql-15 installed correctly?)"
	fi
	pg_paths
	sock="$(pg_socket_dir)"

	if pg_running "$bin"; then
		log "postgresql: already running (socket $sock)"
	else
		pg_owner_dirs "$PG_DIR" "$sock"
		if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
			rm -rf "$PG_DATA"
			pg_owner_dirs "$PG_DATA"
			chmod 700 "$PG_DATA"
			pg_run "$bin/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --no-locale \
				--no-sync >"$PG_DIR/initdb.log" 2>&1 ||
				die "initdb failed; see $PG_DIR/initdb.log"
			echo "include_if_exists = 'claudeweb.conf'" >>"$PG_DATA/postgresql.conf"
		fi
		# Rewritten on every start, so a moved checkout still finds its socket directory.
		cat >"$PG_DATA/claudeweb.conf" <<-EOF
			listen_addresses = ''
			port = $PG_PORT
			unix_socket_directories = '$sock'
			fsync = off
			full_page_writes = off
			synchronous_commit = off
			max_connections = 100
		EOF
		[[ $EUID -eq 0 ]] && chown postgres:postgres "$PG_DATA/claudeweb.conf"
		pg_run "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$START_TIMEOUT_S" start \
			>/dev/null 2>&1 9>&- || {
			tail -n 20 "$PG_LOG" >&2 2>/dev/null || true
			die "postgresql did not start within ${START_TIMEOUT_S}s; see $PG_LOG"
		}
		log "postgresql: started (socket $sock)"
	fi

	local exists
	exists="$("$bin/psql" -h "$sock" -p "$PG_PORT" -U postgres -d postgres -tAX \
		-c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" ||
		die "postgresql is up but psql cannot connect through $sock"
	if [[ "$exists" != 1 ]]; then
		"$bin/createdb" -h "$sock" -p "$PG_PORT" -U postgres "$PG_DB" ||
			die "createdb $PG_DB failed"
	fi
}

pg_stop() {
	local bin
	bin="$(pg_bindir || true)"
	[[ -n "$bin" ]] || return 0
	pg_paths
	if pg_running "$bin"; then
		pg_run "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t "$START_TIMEOUT_S" stop >/dev/null ||
			die "pg_ctl stop failed; see $PG_LOG"
		log "postgresql: stopped"
	fi
}

pg_env() {
	local bin sock url
	bin="$(pg_bindir || true)"
	pg_paths
	[[ -n "$bin" ]] && pg_running "$bin" || return 1
	sock="$(pg_socket_dir)"
	url="$(python3 -c 'import sys, urllib.parse
print("postgres://postgres@%s:%s/%s" % (urllib.parse.quote(sys.argv[1], safe=""), sys.argv[2], sys.argv[3]))' \
		"$sock" "$PG_PORT" "$PG_DB")"
	printf 'export DATABASE_URL=%q\n' "$url"
	printf 'export PGHOST=%q PGPORT=%q PGUSER=postgres\n' "$sock" "$PG_PORT"
}

# --- Redis --------------------------------------------------------------------------------------

redis_pid() { read_file "$REDIS_DIR/redis.pid"; }
redis_port() { read_file "$REDIS_DIR/port"; }

redis_running() {
	local pid port
	pid="$(redis_pid)" && port="$(redis_port)" || return 1
	pid_matches "$pid" redis-server &&
		[[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]]
}

redis_start() {
	if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
		apt_install redis-server
	fi
	if redis_running; then
		log "redis: already running (port $(redis_port))"
		return 0
	fi
	mkdir -p "$REDIS_DIR"
	local port
	port="$(redis_port || true)"
	if [[ -z "$port" ]] || ! port_is_free "$port"; then
		port="$(free_port)"
	fi
	rm -f "$REDIS_DIR/redis.pid"
	redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
		--pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" --dir "$REDIS_DIR" \
		--save '' --appendonly no >/dev/null 9>&- ||
		die "redis-server failed to start; see $REDIS_DIR/redis.log"
	echo "$port" >"$REDIS_DIR/port"
	wait_until "$START_TIMEOUT_S" redis_running || {
		tail -n 20 "$REDIS_DIR/redis.log" >&2 2>/dev/null || true
		die "redis did not answer PING within ${START_TIMEOUT_S}s; see $REDIS_DIR/redis.log"
	}
	log "redis: started (port $port)"
}

redis_stop() {
	local pid port
	pid="$(redis_pid)" || return 0
	port="$(redis_port || true)"
	if pid_matches "$pid" redis-server; then
		if [[ -n "$port" ]]; then
			redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
		fi
		stop_or_kill "$pid" redis-server
		log "redis: stopped"
	fi
	rm -f "$REDIS_DIR/redis.pid"
}

redis_env() {
	redis_running || return 1
	printf 'export REDIS_URL=%q\n' "redis://127.0.0.1:$(redis_port)/0"
}

# --- S3 (moto) ----------------------------------------------------------------------------------

s3_pid() { read_file "$S3_DIR/pid"; }
s3_url() { read_file "$S3_DIR/url"; }

s3_running() {
	local pid url hostport
	pid="$(s3_pid)" && url="$(s3_url)" || return 1
	pid_matches "$pid" s3_local.py || return 1
	hostport="${url#http://}"
	(exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}") 2>/dev/null
}

# Launches the server and returns at once (it boots while PostgreSQL starts); s3_wait waits.
S3_LAUNCHER=""
s3_launch() {
	[[ -x "$VENV_PY" ]] || die "$VENV_PY is missing; run 'make install' first"
	"$VENV_PY" -c 'import importlib.util as u, sys
sys.exit(not (u.find_spec("moto") and u.find_spec("boto3")))' ||
		die "moto[server] is not installed in .venv; run 'make install' first"
	if s3_running; then
		log "s3: already running ($(s3_url), bucket $S3_BUCKET)"
		return 0
	fi
	local old
	old="$(s3_pid || true)"
	if [[ -n "$old" ]] && pid_matches "$old" s3_local.py; then
		stop_or_kill "$old" s3_local.py
	fi
	mkdir -p "$S3_DIR"
	rm -f "$S3_DIR/url" "$S3_DIR/pid"
	# Any free port (moto binds port 0); the live server of the browser tests runs on a free
	# port too, hence the wildcard origins.
	spawn "$S3_DIR/s3.log" "$VENV_PY" "$ROOT/scripts/s3_local.py" --host 127.0.0.1 --port 0 \
		--bucket "$S3_BUCKET" --ready-file "$S3_DIR/url" --pid-file "$S3_DIR/pid" \
		--cors-origin 'http://127.0.0.1:*' --cors-origin 'http://localhost:*'
	S3_LAUNCHER="$SPAWNED"
}

# Until the server wrote its URL, or gave up. setsid may have forked: the launcher ending is fine
# once the server wrote its pid.
s3_settled() {
	[[ -s "$S3_DIR/url" ]] || ! { kill -0 "$S3_LAUNCHER" 2>/dev/null || [[ -s "$S3_DIR/pid" ]]; }
}

s3_wait() {
	[[ -n "$S3_LAUNCHER" ]] || return 0
	wait_until "$START_TIMEOUT_S" s3_settled || true
	s3_running || {
		tail -n 20 "$S3_DIR/s3.log" >&2 2>/dev/null || true
		s3_stop >/dev/null 2>&1 || true
		die "the local S3 server did not come up within ${START_TIMEOUT_S}s; see $S3_DIR/s3.log"
	}
	log "s3: started ($(s3_url), bucket $S3_BUCKET)"
}

s3_stop() {
	local pid
	pid="$(s3_pid)" || return 0
	if pid_matches "$pid" s3_local.py; then
		stop_or_kill "$pid" s3_local.py
		log "s3: stopped"
	fi
	rm -f "$S3_DIR/pid" "$S3_DIR/url"
}

s3_env() {
	s3_running || return 1
	printf 'export AWS_S3_ENDPOINT_URL=%q\n' "$(s3_url)"
	printf 'export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test\n'
	printf 'export AWS_STORAGE_BUCKET_NAME=%q\n' "$S3_BUCKET"
	printf 'export AWS_S3_REGION_NAME=us-east-1 AWS_DEFAULT_REGION=us-east-1\n'
}

# --- Chromium -----------------------------------------------------------------------------------

chromium_install() {
	if ! command -v chromium >/dev/null 2>&1; then
		apt_install chromium
	fi
	command -v chromium >/dev/null 2>&1 || die "chromium is not on PATH after installing it"
}

chromium_env() {
	local path
	path="$(command -v chromium)" || return 1
	printf 'export CHROMIUM_PATH=%q\n' "$path"
}

# --- the test OpenID provider (tests/oidc_provider/, started by the tests themselves) ------------

# node_modules from package-lock.json, reinstalled only when the lock changed since the last run.
oidc_provider_install() {
	local dir="$ROOT/tests/oidc_provider" stamp="$ROOT/tests/oidc_provider/node_modules/.lock-installed"
	command -v npm >/dev/null 2>&1 || die "npm not found: the single sign-on tests need Node.js 20+"
	if [[ -f $stamp ]] && cmp -s "$dir/package-lock.json" "$stamp"; then
		return 0
	fi
	log "npm ci in tests/oidc_provider/ (the test OpenID provider)"
	(cd "$dir" && npm ci --no-audit --no-fund --silent) || die "npm ci failed in tests/oidc_provider/"
	cp "$dir/package-lock.json" "$stamp"
}

# --- commands -----------------------------------------------------------------------------------

all_env() {
	local failed=()
	{
		echo "# Written by scripts/services.sh start; source it: . .run/services/env"
		pg_env || failed+=(postgresql)
		redis_env || failed+=(redis)
		s3_env || failed+=(s3)
		chromium_env || failed+=(chromium)
	} >"$STATE/env.tmp"
	if ((${#failed[@]})); then
		rm -f "$STATE/env.tmp"
		log "not running: ${failed[*]} (run: scripts/services.sh start)"
		return 1
	fi
	mv "$STATE/env.tmp" "$ENV_FILE"
}

with_lock() {
	mkdir -p "$STATE"
	exec 9>"$STATE/.lock"
	flock -w 120 9 || die "another scripts/services.sh holds $STATE/.lock"
}

cmd_start() {
	with_lock
	# Installs first (one apt-get update at most), then the servers.
	chromium_install
	oidc_provider_install
	s3_launch
	pg_start
	redis_start
	s3_wait
	all_env || die "services started but the environment could not be written"
	log "ready; environment in ${ENV_FILE#"$ROOT"/} (. ${ENV_FILE#"$ROOT"/})"
}

cmd_stop() {
	[[ -d "$STATE" ]] || return 0
	with_lock
	s3_stop
	redis_stop
	pg_stop
	rm -f "$ENV_FILE"
}

# Stop, then remove every service's state (PostgreSQL's data included, wherever it lives).
cmd_clean() {
	cmd_stop
	exec 9>&-
	rm -rf "$STATE" "$PG_OUTSIDE" "/tmp/claudeweb-pg-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
}

cmd_env() {
	[[ -d "$STATE" ]] || die "services are not running (run: scripts/services.sh start)"
	all_env || exit 1
	grep -v '^#' "$ENV_FILE"
}

cmd_status() {
	local bin
	bin="$(pg_bindir || true)"
	pg_paths
	if [[ -n "$bin" ]] && pg_running "$bin"; then
		echo "postgresql: running (socket $(pg_socket_dir))"
	else
		echo "postgresql: stopped"
	fi
	if redis_running; then echo "redis: running (port $(redis_port))"; else echo "redis: stopped"; fi
	if s3_running; then echo "s3: running ($(s3_url))"; else echo "s3: stopped"; fi
	if command -v chromium >/dev/null 2>&1; then
		echo "chromium: installed ($(command -v chromium))"
	else
		echo "chromium: not installed"
	fi
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
clean) cmd_clean ;;
env) cmd_env ;;
status) cmd_status ;;
*)
	echo "usage: $0 start|stop|clean|env|status" >&2
	exit 2
	;;
esac
