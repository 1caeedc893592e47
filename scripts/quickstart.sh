#!/usr/bin/env bash
# Builds Capstan, imports a busybox image made from Debian's busybox-static, and runs a
# single-node server in the foreground (data in ./capstan-data). Run as root from the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install
cargo build --release --bin capstan
bin=./target/release/capstan
mkdir -p ./capstan-data
if ! "$bin" image ls --data-dir ./capstan-data 2>/dev/null | grep -q '^busybox:latest'; then
  "$bin" image build-busybox -o ./capstan-data/busybox.tar
  "$bin" image import ./capstan-data/busybox.tar --data-dir ./capstan-data
fi
exec "$bin" server --data-dir ./capstan-data
