#!/bin/bash
# Runs INSIDE the test VM (chrooted into the host's read-only root, cwd = the shared work dir):
# the guest test files under vitest, with a JSON report written to the work dir for the host.
# The host may leave settings in ./guest-env (KEY=VALUE lines, e.g. STOWAGE_VM_FILTER).
set -uo pipefail
WORK=$(pwd)
CHECKOUT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck disable=SC1091
[ -f "$WORK/guest-env" ] && . "$WORK/guest-env"
export STOWAGE_VM_GUEST=1 STOWAGE_VM_WORK="$WORK" STOWAGE_TEST_REQUIRE=1
cd "$CHECKOUT" || exit 97
echo "guest: kernel $(uname -r), node $(node --version), checkout $CHECKOUT"
# The checkout is read-only here: --configLoader runner keeps vite from writing a bundled
# config into node_modules. Piping through cat makes the console a non-TTY for the reporter.
# shellcheck disable=SC2086
node node_modules/vitest/vitest.mjs run --configLoader runner --config test/vm/vitest.guest.config.ts \
  --reporter=default --reporter=json --outputFile.json="$WORK/report.json" ${STOWAGE_VM_FILTER:-} 2>&1 | cat
