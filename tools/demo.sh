#!/usr/bin/env bash
# Set up everything (tools/setup.sh) and run the demo on an embedded default: an SQLite file,
# a sample image and a demo cluster on loopback. Extra arguments go to 'litefs demo'.
set -euo pipefail
. "$(dirname "$0")/asroot.sh"   # root, or once through sudo
cd "$(dirname "$0")/.."
./tools/setup.sh
exec .venv/bin/litefs demo "$@"
