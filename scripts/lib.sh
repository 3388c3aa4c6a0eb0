# shellcheck shell=bash disable=SC2034 # BIN and SPAWNED are read by the scripts that source this
# Helpers shared by the scripts in this folder; sourced, never run:
#
#   LOG_NAME=run # the prefix of every message
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Sets ROOT (the checkout) and BIN (the app's virtualenv, .venv/bin). A script that waits for a
# server sets START_TIMEOUT_S first.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.venv/bin"

# --- messages -------------------------------------------------------------------------------------

say() { printf '%s: %s\n' "$LOG_NAME" "$*"; }
log() { say "$@" >&2; }
die() {
	printf '%s: error: %s\n' "$LOG_NAME" "$*" >&2
	exit 1
}

# --- ports and URLs -------------------------------------------------------------------------------

free_port() {
	python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

port_is_free() {
	python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: ignore TIME_WAIT
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

# HTTP status of a GET (000 when nothing answers).
http_status() {
	python3 -c 'import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=2).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")' "$1"
}

http_answers() { [[ "$(http_status "$1")" != 000 ]]; }
http_ok() { [[ "$(http_status "$1")" == 200 ]]; }

# wait_http NAME PID URL LOGFILE: until something answers at URL (any status code counts); fail
# clearly, naming LOGFILE as given, when the process dies or START_TIMEOUT_S passes.
wait_http() {
	local name="$1" pid="$2" url="$3" logfile="$4" i
	for ((i = 0; i < START_TIMEOUT_S * 10; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 20 "$logfile" >&2 || true
			die "$name exited during start-up; see $logfile"
		fi
		http_answers "$url" && return 0
		sleep 0.1
	done
	tail -n 20 "$logfile" >&2 || true
	die "$name did not answer at $url within ${START_TIMEOUT_S}s; see $logfile"
}

# --- processes ------------------------------------------------------------------------------------

# True when $1 is a live process whose command line contains $2.
pid_matches() {
	local pid="$1" pattern="$2"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	[[ -r "/proc/$pid/cmdline" ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern"
}

pid_gone() { ! pid_matches "$@"; }

# The contents of a file (a pid, a port, a URL); false when it is missing or empty.
read_file() { [[ -s "$1" ]] && cat "$1"; }

# wait_until SECONDS COMMAND...: run COMMAND every 0.1 s until it succeeds (true) or SECONDS pass
# (false).
wait_until() {
	local tenths=$(($1 * 10)) i
	shift
	for ((i = 0; i < tenths; i++)); do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}

# stop_pid PID PATTERN SECONDS [FIRST LAST]: send signal FIRST (TERM), wait (bounded) for the
# process to go, then send LAST (KILL). False when it had to be sent LAST.
stop_pid() {
	local pid="$1" pattern="$2" seconds="$3" first="${4:-TERM}" last="${5:-KILL}"
	kill -"$first" "$pid" 2>/dev/null || true
	wait_until "$seconds" pid_gone "$pid" "$pattern" && return 0
	kill -"$last" "$pid" 2>/dev/null || true
	return 1
}

# spawn LOGFILE COMMAND...: start COMMAND in the background, in a session of its own (setsid: a
# Ctrl-C in the terminal does not reach it), reading nothing, writing to LOGFILE; $SPAWNED is the
# pid setsid started with. It does not inherit fd 9, the lock of scripts/services.sh.
SPAWNED=""
spawn() {
	local logfile="$1"
	shift
	setsid "$@" </dev/null >"$logfile" 2>&1 9>&- &
	SPAWNED=$!
}

# --- the app's environment ------------------------------------------------------------------------

require_venv() {
	[[ -x "$BIN/python" && -x "$BIN/daphne" ]] || die ".venv is not set up; run 'make install' first"
}

# Start PostgreSQL, Redis, the local S3 and Chromium (scripts/services.sh); export their settings.
use_services() {
	"$ROOT/scripts/services.sh" start
	# shellcheck source=/dev/null
	. "$ROOT/.run/services/env"
}
