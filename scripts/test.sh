#!/usr/bin/env bash
# The test suite, as `make test` and CI run it:
#   1. make install (the app with its dev tools, from the lock, in .venv/; $VENV names another
#      virtualenv, which is then used as it is: make test-latest runs the suite that way)
#   2. scripts/services.sh start: PostgreSQL, Redis, local S3 (moto) and Chromium; stopped on exit
#   3. pytest tests/ without the browser tests, then pytest tests/e2e/ in its own invocation
#      (Playwright's sync API leaves an event loop running, which breaks later asyncio tests);
#      then a line per suite (test file), e.g. "faults: 21 passed", and a line per run.
#
# Extra arguments go to both pytest runs, e.g. scripts/test.sh -x -k upload; with arguments, a
# run that selects no tests (pytest exit code 5) counts as passed. Screenshots and other
# artifacts go to test-artifacts/ ($TEST_ARTIFACTS_DIR).
set -euo pipefail

LOG_NAME="test"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
export VENV="${VENV:-.venv}"
PY="$ROOT/$VENV/bin/python"

if [[ $VENV == .venv ]]; then
	"${MAKE:-make}" --no-print-directory install
fi

stop_services() { "$ROOT/scripts/services.sh" stop || true; }
trap stop_services EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

use_services

# The suite sees the environment it sets up, not a developer's .env.
export CLAUDEWEB_ENV_FILE=-
export TEST_ARTIFACTS_DIR="$ROOT/test-artifacts"
rm -rf "$TEST_ARTIFACTS_DIR"
mkdir -p "$TEST_ARTIFACTS_DIR"
# tests/suites.py appends a line per suite (test file) here: "faults: 21 passed".
export TEST_SUITE_SUMMARY="$TEST_ARTIFACTS_DIR/suites.txt"

summaries=()
failed=0

# run_pytest NAME NO_TESTS_OK PYTEST_ARGS...
run_pytest() {
	local name="$1" no_tests_ok="$2" rc=0 t0=$SECONDS status
	shift 2
	echo
	echo "=== $name: python -m pytest $* ==="
	"$PY" -m pytest "$@" || rc=$?
	if ((rc == 0)); then
		status="passed"
	elif ((rc == 5)) && [[ $no_tests_ok == yes ]]; then
		status="passed (no tests selected)"
	else
		status="FAILED (pytest exit code $rc)"
		failed=1
	fi
	summaries+=("$(printf '%-5s %s in %ds' "$name:" "$status" $((SECONDS - t0)))")
}

no_tests_ok=no
(($#)) && no_tests_ok=yes

run_pytest unit "$no_tests_ok" tests --ignore=tests/e2e -p no:cacheprovider "$@"

e2e_files=()
if [[ -d tests/e2e ]]; then
	mapfile -t e2e_files < <(find tests/e2e -type f \( -name 'test_*.py' -o -name '*_test.py' \))
fi
if ((${#e2e_files[@]})); then
	run_pytest e2e "$no_tests_ok" tests/e2e -p no:cacheprovider "$@"
else
	summaries+=("e2e:  skipped (no test files in tests/e2e)")
fi

stop_services 2>/dev/null

echo
echo "=== summary ==="
if [[ -s $TEST_SUITE_SUMMARY ]]; then
	sed 's/^/  /' "$TEST_SUITE_SUMMARY"
fi
printf '%s\n' "${summaries[@]}"
if ((failed)); then
	echo "test.sh: FAILED"
	exit 1
fi
echo "test.sh: all runs passed"
