#!/usr/bin/env bash
# Benchmarks of fastlane-node, provisioned like the tests (private dockerd, test image).
#   scripts/bench.sh [N]     # latency: N trivial jobs (default 100) vs bare `docker run --rm`
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-100}
state=$(mktemp -d /tmp/fastlane-bench.XXXXXX)
node_pid=
cleanup() {
  [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null || true
  scripts/testenv.sh down "$state" || true
  rm -rf "$state" 2>/dev/null || true
}
trap cleanup EXIT
scripts/testenv.sh up "$state" >/dev/null
# shellcheck disable=SC1091
source "$state/env"
cargo build --release --quiet --bin fastlane-node --example bench_latency
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DATA_DIR="$state/data" RUST_LOG=warn \
  DOCKER_HOSTS="[{\"match\": \"\", \"hosts\": [\"$FASTLANE_TEST_DOCKER_HOSTS\"], \"maxRunning\": 4}]" \
  target/release/fastlane-node start -b 127.0.0.1 -p "$port" 2>"$state/node.log" &
node_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthcheck" >/dev/null && break; sleep 0.1; done
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; docker $(docker -H "tcp://$FASTLANE_TEST_DOCKER_HOSTS" version --format '{{.Server.Version}}')"
target/release/examples/bench_latency "http://127.0.0.1:$port" "$FASTLANE_TEST_DOCKER_HOSTS" "$FASTLANE_TEST_IMAGE" "$count"
