#!/usr/bin/env bash
# Set up (first run only) and start the desktop app. Extra arguments go to the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release -- "$@"
