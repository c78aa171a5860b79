#!/usr/bin/env bash
# Runs every test of fastlane-node on a fresh Debian machine: installs what is missing
# (docker.io, busybox-static), starts a private dockerd on a free loopback port, builds the test
# image with `docker import`, runs formatting and lint checks and all tests, and stops what it
# started — also when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

state=$(mktemp -d /tmp/fastlane-test.XXXXXX)
cleanup() {
  scripts/testenv.sh down "$state" || true
  rm -rf "$state" 2>/dev/null || true
}
trap cleanup EXIT

FASTLANE_TEST_ENGINES=2 scripts/testenv.sh up "$state" >/dev/null
# shellcheck disable=SC1091
source "$state/env"
echo "test environment: docker engines $FASTLANE_TEST_DOCKER_HOSTS, image $FASTLANE_TEST_IMAGE"

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all --locked
