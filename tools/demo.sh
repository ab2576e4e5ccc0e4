#!/usr/bin/env bash
# Set up everything (tools/setup.sh) and run the demo on an embedded default: an SQLite file,
# a sample image and a demo cluster on loopback. Extra arguments go to 'litefs demo'.
set -euo pipefail
cd "$(dirname "$0")/.."
# Root runs it directly (sudo need not be installed); anyone else goes through sudo once.
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "$0: needs root: run it as root (sudo is not installed)" >&2; exit 1; }
  exec sudo -- "$0" "$@"
fi
./tools/setup.sh
exec .venv/bin/litefs demo "$@"
