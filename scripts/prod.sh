#!/usr/bin/env bash
# The production topology on this machine: several Daphne processes behind nginx, PostgreSQL and
# Redis from scripts/services.sh, the local S3, and the offline Claude when no ANTHROPIC_API_KEY.
#
#   scripts/prod.sh start     start everything (does nothing when it already runs)
#   scripts/prod.sh stop      stop what start started (the services of scripts/services.sh stay)
#   scripts/prod.sh status    one line per process
#
# nginx, the Daphne processes, the offline Claude and the maintenance loop (reaper and
# attachment cleanup, `manage.py run_maintenance`) run under supervisord, which restarts any of
# them that exits; its configuration is written to $PROD_DIR/supervisord.conf at every start, and
# `scripts/prod.sh stop` shuts supervisord down with all of them.
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
#   PROD_REAP_EVERY_S   the reaper's interval, seconds           (60)
#   PROD_CLEANUP_EVERY_S the attachment cleanup's interval        (3600)
# Daphne i listens on 127.0.0.1 at a free port, kept across its restarts ($PROD_DIR/daphne-i.port;
# daphne-i.pid holds its pid at start, `supervisorctl -c $PROD_DIR/supervisord.conf pid daphne-i`
# the current one).
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
PROD_REAP_EVERY_S="${PROD_REAP_EVERY_S:-60}"
PROD_CLEANUP_EVERY_S="${PROD_CLEANUP_EVERY_S:-3600}"
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
	pid="$(read_file "$PROD_DIR/supervisord.pid")" && pid_matches "$pid" supervisord
}

ctl() { "$BIN/supervisorctl" -c "$PROD_DIR/supervisord.conf" "$@"; }

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

# secret FILE: a random string generated once into FILE (readable by its owner only).
secret() {
	local file="$1"
	if [[ ! -s "$file" ]]; then
		(
			umask 077
			python3 -c 'import secrets; print(secrets.token_urlsafe(50))' >"$file"
		)
	fi
	cat "$file"
}

use_offline_claude() {
	OFFLINE_PORT="$(free_port)"
	ANTHROPIC_BASE_URL="http://127.0.0.1:$OFFLINE_PORT"
	ANTHROPIC_API_KEY=offline-local-key
	export ANTHROPIC_BASE_URL ANTHROPIC_API_KEY
	say "no ANTHROPIC_API_KEY: replies come from the offline Claude at $ANTHROPIC_BASE_URL"
}

choose_ports() {
	local i
	for ((i = 1; i <= PROD_WORKERS; i++)); do
		free_port >"$PROD_DIR/daphne-$i.port"
	done
}

# program NAME PRIORITY STOPSIGNAL LOG COMMAND...: a [program:NAME] section, restarted whenever
# it exits.
program() {
	local name="$1" priority="$2" stopsignal="$3" log="$4"
	shift 4
	cat <<EOF

[program:$name]
command=$*
directory=$ROOT
priority=$priority
autostart=true
autorestart=true
startsecs=1
startretries=10
stopsignal=$stopsignal
stopwaitsecs=10
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=$log
stdout_logfile_maxbytes=10MB
stdout_logfile_backups=2
EOF
}

# supervisord's configuration; the programs inherit this script's environment (the settings).
write_supervisord_conf() {
	local i
	{
		cat <<EOF
; Generated by scripts/prod.sh; regenerated at every start.
[supervisord]
logfile=$PROD_DIR/supervisord.log
pidfile=$PROD_DIR/supervisord.pid
childlogdir=$PROD_DIR
directory=$ROOT
umask=022

[unix_http_server]
file=$PROD_DIR/supervisor.sock
chmod=0700

[supervisorctl]
serverurl=unix://$PROD_DIR/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
EOF
		if [[ -n "${OFFLINE_PORT:-}" ]]; then
			program offline-claude 10 TERM "$PROD_DIR/offline-claude.log" \
				"$BIN/python" -m offline_claude --host 127.0.0.1 --port "$OFFLINE_PORT"
		fi
		for ((i = 1; i <= PROD_WORKERS; i++)); do
			# --proxy-headers: the client address comes from nginx's X-Forwarded-For.
			program "daphne-$i" 20 TERM "$PROD_DIR/daphne-$i.log" "$BIN/python" -m claudeweb.server \
				-b 127.0.0.1 -p "$(cat "$PROD_DIR/daphne-$i.port")" --proxy-headers \
				claudeweb.asgi:application
		done
		# nginx in the foreground, watched by supervisord; QUIT lets requests in flight finish.
		program nginx 30 QUIT "$PROD_DIR/nginx-supervised.log" "$(command -v nginx)" \
			-p "$PROD_DIR" -c "$PROD_DIR/nginx.conf" -e "$PROD_DIR/nginx-error.log" \
			-g "'daemon off;'"
		program maintenance 40 TERM "$PROD_DIR/maintenance.log" "$BIN/python" manage.py \
			run_maintenance --reap-every-seconds "$PROD_REAP_EVERY_S" \
			--cleanup-every-seconds "$PROD_CLEANUP_EVERY_S"
	} >"$PROD_DIR/supervisord.conf"
}

wait_started() {
	local i port login="http://127.0.0.1:$PROD_PORT/login/"
	for ((i = 1; i <= PROD_WORKERS; i++)); do
		port="$(cat "$PROD_DIR/daphne-$i.port")"
		wait_until "$START_TIMEOUT_S" http_answers "http://127.0.0.1:$port/login/" || {
			ctl status >&2 || true
			tail -n 20 "$PROD_DIR/daphne-$i.log" >&2 || true
			die "daphne $i did not answer on port $port within ${START_TIMEOUT_S}s; see $PROD_DIR"
		}
		ctl pid "daphne-$i" >"$PROD_DIR/daphne-$i.pid"
	done
	wait_until "$START_TIMEOUT_S" http_ok "$login" || {
		ctl status >&2 || true
		die "GET /login/ through nginx answered $(http_status "$login"); see $PROD_DIR"
	}
}

write_nginx_conf() {
	local i servers="" user_line=""
	for ((i = 1; i <= PROD_WORKERS; i++)); do
		servers+="        server 127.0.0.1:$(cat "$PROD_DIR/daphne-$i.port") max_fails=1 fail_timeout=2s;"$'\n'
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
    log_format upstream '\$remote_addr [\$time_local] \$request_id "\$request" \$status \$body_bytes_sent '
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

    # Round robin over the Daphne processes; a socket stays on the process it reached. A process
    # that refused a connection is left out for 2 s (not nginx's 10): supervisord restarts a
    # dead one in a few seconds, and a refused connect on loopback costs next to nothing.
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
            proxy_set_header X-Request-ID \$request_id;
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

        # Metrics: from this machine only (and the token in $PROD_DIR/metrics_token).
        location = /metrics {
            allow 127.0.0.1;
            deny all;
            access_log off;
            proxy_pass http://claudeweb;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_read_timeout 10s;
        }

        location / {
            proxy_pass http://claudeweb;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Request-ID \$request_id;
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
	DJANGO_SECRET_KEY="$(secret "$PROD_DIR/secret_key")"
	export DJANGO_SECRET_KEY
	# /metrics: read with `Authorization: Bearer $(cat $PROD_DIR/metrics_token)`, from loopback;
	# the processes add up their values in $PROD_DIR/metrics, emptied at every start.
	METRICS_TOKEN="$(secret "$PROD_DIR/metrics_token")"
	PROMETHEUS_MULTIPROC_DIR="$PROD_DIR/metrics"
	rm -rf "$PROMETHEUS_MULTIPROC_DIR"
	mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
	export METRICS_TOKEN PROMETHEUS_MULTIPROC_DIR
	export DJANGO_ALLOWED_HOSTS="${DJANGO_ALLOWED_HOSTS:-127.0.0.1,localhost}"
	export DJANGO_SECURE_SSL_REDIRECT=false
	export DJANGO_SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO
	OFFLINE_PORT=""
	if [[ -z "${ANTHROPIC_API_KEY:-}" ]]; then
		use_offline_claude
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

	choose_ports
	write_nginx_conf
	nginx -t -q -p "$PROD_DIR" -c "$PROD_DIR/nginx.conf" -e "$PROD_DIR/nginx-error.log" ||
		die "nginx rejected $PROD_DIR/nginx.conf"
	write_supervisord_conf
	# It daemonizes once its socket is up; it does not hold fd 9 (scripts/services.sh's lock).
	"$BIN/supervisord" -c "$PROD_DIR/supervisord.conf" 9>&- ||
		die "supervisord did not start; see $PROD_DIR/supervisord.log"
	wait_started
	say "serving http://127.0.0.1:$PROD_PORT/ — nginx → $PROD_WORKERS Daphne processes, under supervisord"
	say "database ${DATABASE_URL%%\?*}, Redis $REDIS_URL; logs and pids in $PROD_DIR"
	say "stop with: scripts/prod.sh stop (status: scripts/prod.sh status)"
}

# --- stop and status ------------------------------------------------------------------------------

cmd_stop() {
	[[ -d "$PROD_DIR" ]] || return 0
	local pid file
	if pid="$(read_file "$PROD_DIR/supervisord.pid")" && pid_matches "$pid" supervisord; then
		# Stops every program (nginx with QUIT, the others with TERM), then itself.
		ctl shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
		wait_until 30 pid_gone "$pid" supervisord || stop_pid "$pid" supervisord 5 TERM KILL || true
	fi
	rm -f "$PROD_DIR/supervisord.pid"
	# What a start by an earlier version of this script, without supervisord, left running.
	if pid="$(read_file "$PROD_DIR/nginx.pid")" && pid_matches "$pid" nginx; then
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
	if running; then
		echo "supervisord: running (pid $(cat "$PROD_DIR/supervisord.pid"), http://127.0.0.1:$PROD_PORT/)"
		ctl status || true
	else
		echo "supervisord: stopped"
	fi
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
