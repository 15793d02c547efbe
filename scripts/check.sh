#!/usr/bin/env bash
# The project's whole check: set-up, formatting, lints as errors, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test
