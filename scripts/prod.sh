#!/usr/bin/env bash
# The production topology on this machine: several Daphne processes behind nginx, PostgreSQL and
# Redis from scripts/services.sh, the local S3, and the offline Claude when no ANTHROPIC_API_KEY.
#
#   scripts/prod.sh start     start everything (does nothing when it already runs)
#   scripts/prod.sh stop      stop what start started (the services of scripts/services.sh stay)
#   scripts/prod.sh status    one line per process
#
# Plain HTTP on loopback: http://127.0.0.1:${PROD_PORT:-8080}/. Settings are production ones
# (DJANGO_DEBUG=false, a secret key generated once into $PROD_DIR/secret_key, static files
# collected and served by whitenoise) except DJANGO_SECURE_SSL_REDIRECT=false, since nothing
# terminates TLS here. nginx sets X-Forwarded-Proto to the scheme it was reached with and Django
# trusts it (DJANGO_SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO), which is also what a real
# host with TLS at nginx needs (docs/deploy.md).
#
# Environment (all optional):
#   PROD_DIR            state, logs, pid files, nginx.conf      (.run/prod)
#   PROD_PORT           nginx's port on 127.0.0.1                (8080)
#   PROD_WORKERS        Daphne processes                         (2)
#   PROD_NGINX_WORKERS  nginx worker processes                   (1)
#   PROD_DATABASE_URL   default: database claudeweb_prod in the PostgreSQL of scripts/services.sh
#   PROD_REDIS_URL      default: the Redis of scripts/services.sh
#   AWS_S3_ENDPOINT_URL default: the local S3 of scripts/services.sh
#   ANTHROPIC_API_KEY   unset: the offline Claude on a free port (ANTHROPIC_BASE_URL set to it)
#   PROD_SKIP_DEMO_USER set to 1 to not create the demo login
# Daphne i listens on 127.0.0.1 at a free port (pid and port in $PROD_DIR/daphne-i.{pid,port}).
set -euo pipefail
umask 022

LOG_NAME=prod
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
PROD_DIR="${PROD_DIR:-$ROOT/.run/prod}"
PROD_PORT="${PROD_PORT:-8080}"
PROD_WORKERS="${PROD_WORKERS:-2}"
PROD_NGINX_WORKERS="${PROD_NGINX_WORKERS:-1}"
START_TIMEOUT_S="${START_TIMEOUT_S:-30}"
PROD_DB=claudeweb_prod

# stop_pid_file FILE PATTERN: stop the process FILE names (SIGTERM, then SIGKILL after 10 s).
stop_pid_file() {
	local file="$1" pattern="$2" pid
	pid="$(read_file "$file")" || return 0
	if pid_matches "$pid" "$pattern"; then
		stop_pid "$pid" "$pattern" 10 || true
	fi
	rm -f "$file"
}

running() {
	local pid
	pid="$(read_file "$PROD_DIR/nginx.pid")" && pid_matches "$pid" nginx
}

# --- start ----------------------------------------------------------------------------------------

ensure_nginx() {
	command -v nginx >/dev/null 2>&1 && return 0
	[[ $EUID -eq 0 ]] || die "nginx is not installed (apt-get install nginx, as root)"
	say "installing nginx (apt-get install nginx)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >"$PROD_DIR/apt.log" 2>&1 || {
		DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$PROD_DIR/apt.log" 2>&1
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >>"$PROD_DIR/apt.log" 2>&1
	} || die "apt-get install nginx failed; see $PROD_DIR/apt.log"
}

# DATABASE_URL, REDIS_URL and the S3 settings: PROD_DATABASE_URL / PROD_REDIS_URL when given,
# else the services of scripts/services.sh (started when needed) with a database of our own.
# (Not DATABASE_URL itself: `. .run/services/env` sets it to the test suite's database.)
ensure_services() {
	if [[ -z "${PROD_DATABASE_URL:-}" || -z "${PROD_REDIS_URL:-}" || -z "${AWS_S3_ENDPOINT_URL:-}" ]]; then
		local given_s3="${AWS_S3_ENDPOINT_URL:-}"
		use_services
		[[ -n "$given_s3" ]] && AWS_S3_ENDPOINT_URL="$given_s3"
	fi
	REDIS_URL="${PROD_REDIS_URL:-$REDIS_URL}"
	if [[ -n "${PROD_DATABASE_URL:-}" ]]; then
		DATABASE_URL="$PROD_DATABASE_URL"
	else
		# A database of its own next to the services' one, created when missing.
		DATABASE_URL="$("$BIN/python" - "$DATABASE_URL" "$PROD_DB" <<'EOF'
import sys
from urllib.parse import urlsplit, urlunsplit

import psycopg

url, name = sys.argv[1], sys.argv[2]
admin = urlunsplit(urlsplit(url)._replace(path="/postgres")).replace("postgres://", "postgresql://", 1)
with psycopg.connect(admin, autocommit=True) as conn:
    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
        conn.execute(f"CREATE DATABASE {name}")
print(urlunsplit(urlsplit(url)._replace(path=f"/{name}")))
EOF
		)"
	fi
	export DATABASE_URL REDIS_URL AWS_S3_ENDPOINT_URL
}

secret_key() {
	local file="$PROD_DIR/secret_key"
	if [[ ! -s "$file" ]]; then
		(
			umask 077
			python3 -c 'import secrets; print(secrets.token_urlsafe(50))' >"$file"
		)
	fi
	cat "$file"
}

start_offline_claude() {
	local log="$PROD_DIR/offline-claude.log"
	spawn "$log" "$BIN/python" -m offline_claude --host 127.0.0.1 --port 0
	echo "$SPAWNED" >"$PROD_DIR/offline-claude.pid"
	wait_until "$START_TIMEOUT_S" grep -q 'listening on' "$log" 2>/dev/null ||
		die "the offline Claude did not start; see $log"
	ANTHROPIC_BASE_URL="$(grep -m1 'listening on' "$log" | awk '{print $NF}')"
	ANTHROPIC_API_KEY=offline-local-key
	export ANTHROPIC_BASE_URL ANTHROPIC_API_KEY
	say "no ANTHROPIC_API_KEY: replies come from the offline Claude at $ANTHROPIC_BASE_URL"
}

start_daphnes() {
	local i port
	for ((i = 1; i <= PROD_WORKERS; i++)); do
		port="$(free_port)"
		# --proxy-headers: the client address comes from X-Forwarded-For, which nginx sets to the
		# address it saw (never appends to a client's own: Daphne takes the first entry).
		spawn "$PROD_DIR/daphne-$i.log" "$BIN/python" -m claudeweb.server -b 127.0.0.1 \
			-p "$port" --proxy-headers claudeweb.asgi:application
		echo "$SPAWNED" >"$PROD_DIR/daphne-$i.pid"
		echo "$port" >"$PROD_DIR/daphne-$i.port"
	done
	for ((i = 1; i <= PROD_WORKERS; i++)); do
		wait_http "daphne $i" "$(cat "$PROD_DIR/daphne-$i.pid")" \
			"http://127.0.0.1:$(cat "$PROD_DIR/daphne-$i.port")/login/" "$PROD_DIR/daphne-$i.log"
	done
}

write_nginx_conf() {
	local i servers="" user_line=""
	for ((i = 1; i <= PROD_WORKERS; i++)); do
		servers+="        server 127.0.0.1:$(cat "$PROD_DIR/daphne-$i.port");"$'\n'
	done
	# As root the workers drop to an unprivileged user; they only need the sockets.
	if [[ $EUID -eq 0 ]]; then
		user_line="user nobody nogroup;"
	fi
	mkdir -p "$PROD_DIR/nginx-tmp"
	cat >"$PROD_DIR/nginx.conf" <<EOF
# Generated by scripts/prod.sh; regenerated at every start.
$user_line
worker_processes $PROD_NGINX_WORKERS;
pid $PROD_DIR/nginx.pid;
error_log $PROD_DIR/nginx-error.log warn;

events {
    worker_connections 16384;
}

http {
    log_format upstream '\$remote_addr [\$time_local] "\$request" \$status \$body_bytes_sent '
                        'upstream=\$upstream_addr rt=\$request_time';
    access_log $PROD_DIR/nginx-access.log upstream buffer=64k flush=1s;
    client_body_temp_path $PROD_DIR/nginx-tmp/body;
    proxy_temp_path $PROD_DIR/nginx-tmp/proxy;
    fastcgi_temp_path $PROD_DIR/nginx-tmp/fastcgi;
    uwsgi_temp_path $PROD_DIR/nginx-tmp/uwsgi;
    scgi_temp_path $PROD_DIR/nginx-tmp/scgi;
    server_tokens off;
    # Form posts only: images go from the browser straight to S3.
    client_max_body_size 1m;

    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        ''      close;
    }

    # Round robin over the Daphne processes; a socket stays on the process it reached.
    upstream claudeweb {
$servers        keepalive 32;
    }

    server {
        listen 127.0.0.1:$PROD_PORT;

        location /ws/ {
            proxy_pass http://claudeweb;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            # A socket may stay quiet for long: Daphne pings every 20 s, so an hour only
            # bounds a socket whose client vanished without closing.
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_buffering off;
            # Which process a socket reached (the topology check reads it).
            add_header X-Upstream \$upstream_addr always;
        }

        # Probes of load balancers and orchestrators: every few seconds, kept out of the log.
        location ~ ^/(healthz|readyz)\$ {
            access_log off;
            proxy_pass http://claudeweb;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_read_timeout 10s;
        }

        location / {
            proxy_pass http://claudeweb;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_read_timeout 60s;
            add_header X-Upstream \$upstream_addr always;
        }
    }
}
EOF
}

cmd_start() {
	mkdir -p "$PROD_DIR"
	if running; then
		say "already running on http://127.0.0.1:$PROD_PORT/ (scripts/prod.sh stop to stop it)"
		return 0
	fi
	require_venv
	port_is_free "$PROD_PORT" || die "port $PROD_PORT is in use; set PROD_PORT"
	[[ "$PROD_WORKERS" =~ ^[1-9][0-9]*$ ]] || die "PROD_WORKERS must be a whole number ≥ 1"
	ensure_nginx
	ensure_services
	# A start after a crash: nothing of ours may still hold the ports or the pid files.
	cmd_stop >/dev/null 2>&1 || true

	export DJANGO_DEBUG=false
	DJANGO_SECRET_KEY="$(secret_key)"
	export DJANGO_SECRET_KEY
	export DJANGO_ALLOWED_HOSTS="${DJANGO_ALLOWED_HOSTS:-127.0.0.1,localhost}"
	export DJANGO_SECURE_SSL_REDIRECT=false
	export DJANGO_SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO
	if [[ -z "${ANTHROPIC_API_KEY:-}" ]]; then
		start_offline_claude
	fi

	"$BIN/python" manage.py migrate --noinput -v 0
	if [[ "${PROD_SKIP_DEMO_USER:-}" != 1 ]]; then
		"$BIN/python" manage.py ensure_demo_user
	fi
	# Every process of this deployment starts now, so no reply can still be streaming: all
	# `streaming` rows are leftovers. (A single process restarting beside live ones must use
	# the default --stale-seconds instead; docs/deploy.md.)
	"$BIN/python" manage.py reap_replies --stale-seconds 0
	"$BIN/python" manage.py collectstatic --noinput -v 0

	start_daphnes
	write_nginx_conf
	nginx -t -q -p "$PROD_DIR" -c "$PROD_DIR/nginx.conf" -e "$PROD_DIR/nginx-error.log" ||
		die "nginx rejected $PROD_DIR/nginx.conf"
	nginx -p "$PROD_DIR" -c "$PROD_DIR/nginx.conf" -e "$PROD_DIR/nginx-error.log"
	local login="http://127.0.0.1:$PROD_PORT/login/"
	wait_until "$START_TIMEOUT_S" http_ok "$login" ||
		die "GET /login/ through nginx answered $(http_status "$login"); see $PROD_DIR"
	say "serving http://127.0.0.1:$PROD_PORT/ — nginx → $PROD_WORKERS Daphne processes"
	say "database ${DATABASE_URL%%\?*}, Redis $REDIS_URL; logs and pids in $PROD_DIR"
	say "stop with: scripts/prod.sh stop"
}

# --- stop and status ------------------------------------------------------------------------------

cmd_stop() {
	[[ -d "$PROD_DIR" ]] || return 0
	local pid file
	if pid="$(read_file "$PROD_DIR/nginx.pid")" && pid_matches "$pid" nginx; then
		# QUIT: finish the requests in flight (sockets are closed when their process stops).
		stop_pid "$pid" nginx 5 QUIT TERM || true
	fi
	rm -f "$PROD_DIR/nginx.pid"
	for file in "$PROD_DIR"/daphne-*.pid; do
		[[ -e "$file" ]] || continue
		stop_pid_file "$file" claudeweb.server
		rm -f "${file%.pid}.port"
	done
	stop_pid_file "$PROD_DIR/offline-claude.pid" offline_claude
	say "stopped"
}

cmd_status() {
	local pid file
	if running; then
		echo "nginx: running (pid $(cat "$PROD_DIR/nginx.pid"), http://127.0.0.1:$PROD_PORT/)"
	else
		echo "nginx: stopped"
	fi
	for file in "$PROD_DIR"/daphne-*.pid; do
		[[ -e "$file" ]] || continue
		pid="$(read_file "$file" || true)"
		if pid_matches "$pid" claudeweb.server; then
			echo "$(basename "${file%.pid}"): running (pid $pid, port $(cat "${file%.pid}.port"))"
		else
			echo "$(basename "${file%.pid}"): stopped"
		fi
	done
	pid="$(read_file "$PROD_DIR/offline-claude.pid" || true)"
	if pid_matches "$pid" offline_claude; then echo "offline-claude: running (pid $pid)"; fi
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
	echo "usage: $0 start|stop|status" >&2
	exit 2
	;;
esac
