#!/usr/bin/env bash
# Set up simgate in .venv and run the gateway on examples/servers.json (real servers from PyPI and
# npm, fetched by uvx/npx on first start). Clients connect to http://127.0.0.1:8808/mcp.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e .
export PATH="$PWD/.venv/bin:$PATH"
exec simgate serve examples/servers.json "$@"
