#!/usr/bin/env bash
# Run claudeweb locally on http://127.0.0.1:${PORT:-8000}/ (what `make run` runs).
#
#   0. Reads .env when present (variables already set win).
#   1. With no ANTHROPIC_API_KEY, starts the offline Claude (a local server speaking the Messages
#      API) on 127.0.0.1:${OFFLINE_CLAUDE_PORT:-8765} and points the SDK at it.
#   2. With no AWS_S3_ENDPOINT_URL, starts a local S3 (scripts/s3_local.py, moto) on
#      127.0.0.1:${S3_PORT:-9100} with bucket ${AWS_STORAGE_BUCKET_NAME:-claudeweb}. Its objects
#      are kept in ${S3_DATA_DIR:-.local-s3/} as well, so uploads survive a restart as the
#      SQLite rows that point at them do.
#   3. migrate, ensure_demo_user, reap_replies --stale-seconds 0 (replies left streaming by a
#      process that died are marked interrupted), collectstatic when DJANGO_DEBUG is false.
#   4. Serves with Daphne in the foreground until Ctrl-C, then stops what it started.
#
# Logs of the background services: .run/offline-claude.log, .run/s3-local.log.
set -euo pipefail

LOG_NAME=run
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
RUN_DIR="$ROOT/.run"
# Relative to $ROOT, as the messages name them.
OFFLINE_LOG=.run/offline-claude.log
S3_LOG=.run/s3-local.log
PORT="${PORT:-8000}"
OFFLINE_CLAUDE_PORT="${OFFLINE_CLAUDE_PORT:-8765}"
S3_PORT="${S3_PORT:-9100}"
S3_DATA_DIR="${S3_DATA_DIR:-$ROOT/.local-s3}"
START_TIMEOUT_S="${START_TIMEOUT_S:-30}"
URL="http://127.0.0.1:$PORT/"

require_venv

# .env (when present) fills in what the environment does not set, as the settings do: a key
# written there decides below whether the offline model starts.
dotenv_exports="$("$BIN/python" -m claudeweb.dotenv)" || die "could not read .env (see above)"
eval "$dotenv_exports"

# --- background processes, stopped on exit (Ctrl-C included) -------------------------------------

names=()
pids=()
daphne_pid=""

# shellcheck disable=SC2317  # called through wait_until
all_gone() {
	local pid
	for pid in "$@"; do
		kill -0 "$pid" 2>/dev/null && return 1
	done
	return 0
}

# shellcheck disable=SC2317  # called by the EXIT trap
stop_all() {
	local i pid all=("${pids[@]}")
	trap - INT TERM HUP
	[[ -n "$daphne_pid" ]] && all+=("$daphne_pid")
	for pid in "${all[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	# Bounded wait, then SIGKILL whatever is left.
	wait_until 5 all_gone "${all[@]}" || true
	for i in "${!pids[@]}"; do
		if kill -0 "${pids[$i]}" 2>/dev/null; then
			kill -KILL "${pids[$i]}" 2>/dev/null || true
			say "killed ${names[$i]} (pid ${pids[$i]}): it did not stop on SIGTERM"
		fi
	done
	if [[ -n "$daphne_pid" ]]; then
		kill -KILL "$daphne_pid" 2>/dev/null || true
	fi
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# start_bg NAME LOGFILE COMMAND...
start_bg() {
	local name="$1" logfile="$2"
	shift 2
	"$@" </dev/null >"$logfile" 2>&1 &
	names+=("$name")
	pids+=("$!")
}

# The local S3 wrote its ready file (once the bucket and its CORS rules exist), or exited.
# shellcheck disable=SC2317  # called through wait_until
s3_settled() { [[ -s "$RUN_DIR/s3-local.url" ]] || ! kill -0 "$s3_pid" 2>/dev/null; }

debug_is_off() {
	case "$(printf '%s' "${DJANGO_DEBUG:-}" | tr '[:upper:]' '[:lower:]')" in
	0 | false | no | off) return 0 ;;
	*) return 1 ;;
	esac
}

# --- start ----------------------------------------------------------------------------------------

say "starting claudeweb on $URL"
port_is_free "$PORT" || die "port $PORT is in use; stop what uses it or set PORT"
mkdir -p "$RUN_DIR"

offline_pid=""
if [[ -z "${ANTHROPIC_API_KEY:-}" ]]; then
	port_is_free "$OFFLINE_CLAUDE_PORT" ||
		die "port $OFFLINE_CLAUDE_PORT (offline Claude) is in use; set OFFLINE_CLAUDE_PORT"
	start_bg "offline Claude" "$OFFLINE_LOG" \
		"$BIN/python" -m offline_claude --host 127.0.0.1 --port "$OFFLINE_CLAUDE_PORT"
	offline_pid="${pids[-1]}"
	export ANTHROPIC_BASE_URL="http://127.0.0.1:$OFFLINE_CLAUDE_PORT"
	export ANTHROPIC_API_KEY="offline-local-key"
	say "no ANTHROPIC_API_KEY: replies come from the offline Claude at $ANTHROPIC_BASE_URL"
else
	say "using the Anthropic API${ANTHROPIC_BASE_URL:+ at $ANTHROPIC_BASE_URL}"
fi

s3_pid=""
if [[ -z "${AWS_S3_ENDPOINT_URL:-}" ]]; then
	port_is_free "$S3_PORT" || die "port $S3_PORT (local S3) is in use; set S3_PORT"
	export AWS_STORAGE_BUCKET_NAME="${AWS_STORAGE_BUCKET_NAME:-claudeweb}"
	rm -f "$RUN_DIR/s3-local.url"
	start_bg "local S3" "$S3_LOG" \
		"$BIN/python" "$ROOT/scripts/s3_local.py" --host 127.0.0.1 --port "$S3_PORT" \
		--bucket "$AWS_STORAGE_BUCKET_NAME" --ready-file "$RUN_DIR/s3-local.url" \
		--data-dir "$S3_DATA_DIR" \
		--cors-origin "http://127.0.0.1:$PORT" --cors-origin "http://localhost:$PORT"
	s3_pid="${pids[-1]}"
	export AWS_S3_ENDPOINT_URL="http://127.0.0.1:$S3_PORT"
	export AWS_ACCESS_KEY_ID=test
	export AWS_SECRET_ACCESS_KEY=test
	export AWS_S3_REGION_NAME=us-east-1
	say "no AWS_S3_ENDPOINT_URL: uploads go to a local S3 at $AWS_S3_ENDPOINT_URL" \
		"(bucket $AWS_STORAGE_BUCKET_NAME, kept in ${S3_DATA_DIR#"$ROOT"/})"
else
	say "using S3 at $AWS_S3_ENDPOINT_URL"
fi

# The database work runs while the services above boot.
"$BIN/python" manage.py migrate --noinput
"$BIN/python" manage.py ensure_demo_user
"$BIN/python" manage.py reap_replies --stale-seconds 0
if debug_is_off; then
	"$BIN/python" manage.py collectstatic --noinput
fi

if [[ -n "$offline_pid" ]]; then
	wait_http "the offline Claude" "$offline_pid" "$ANTHROPIC_BASE_URL/" "$OFFLINE_LOG"
fi
if [[ -n "$s3_pid" ]]; then
	wait_until "$START_TIMEOUT_S" s3_settled || true
	[[ -s "$RUN_DIR/s3-local.url" ]] || {
		tail -n 20 "$S3_LOG" >&2 || true
		die "the local S3 did not come up within ${START_TIMEOUT_S}s; see $S3_LOG"
	}
	wait_http "the local S3" "$s3_pid" "$AWS_S3_ENDPOINT_URL/" "$S3_LOG"
fi

echo
say "open $URL — log in as demo / see above"
say "Ctrl-C stops the server and the services started here"
echo

# Daphne runs as a child rather than through exec, so that the trap above still stops the
# background services when it exits. A background child ignores the terminal's SIGINT; the
# INT trap forwards it as SIGTERM.
"$BIN/python" -m claudeweb.server -b 127.0.0.1 -p "$PORT" claudeweb.asgi:application </dev/null &
daphne_pid=$!
rc=0
wait "$daphne_pid" || rc=$?
daphne_pid=""
exit "$rc"
