#!/usr/bin/env bash
# Set up everything (tools/setup.sh) and run the demo on an embedded default: an SQLite file,
# a sample image and a demo cluster on loopback. Extra arguments go to 'litefs demo'.
set -euo pipefail
cd "$(dirname "$0")/.."
# Root runs it directly (sudo need not be installed); anyone else goes through sudo once.
if [ "$(id -u)" -ne 0 ]; then exec sudo -- "$0" "$@"; fi
./tools/setup.sh
exec .venv/bin/litefs demo "$@"
