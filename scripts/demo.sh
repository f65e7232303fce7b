#!/usr/bin/env bash
# Install, then run the embedded default job (`netdef demo`): nothing is downloaded beyond PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/netdef demo "$@"
