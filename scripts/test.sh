#!/usr/bin/env bash
# Set up everything the tests need on a bare machine, then run them: bubblewrap, the package and
# test dependencies in .venv, and the real third-party MCP servers, Node 22, the MCP conformance
# suite, the MCP Inspector and the clients the gateway is tested with (TypeScript SDK, mcp 1.x)
# under $SIMGATE_SERVERS_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
# bubblewrap runs untrusted servers in the sandbox tests (Debian's package; this machine kind is root).
if ! command -v bwrap >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq bubblewrap; }
fi
# docker.io: the Docker sandbox tests start their own private dockerd (tests/docker_engine.py: private
# socket and data root, no bridge, no iptables, no IP forwarding) and stop it by its pid.
# The package must not start the system's own dockerd (that one adds a bridge and NAT rules): where
# no policy-rc.d forbids service starts already, one does for the length of the install.
if ! command -v dockerd >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
    fi
    status=0
    apt-get install -y -qq docker.io >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq docker.io; } \
        || status=$?
    if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
    [ "$status" = 0 ] || exit "$status"
fi
# Headless Chromium renders the fidelity reports' HTML in the fidelity tests (Debian's package).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }
fi
# redis-server: the shared-store tests start a private one (own dir and socket, no persistence) and stop it
# by its pid; the package's own service must not start (policy-rc.d, as for docker.io).
if ! command -v redis-server >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
    fi
    status=0
    apt-get install -y -qq redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server; } \
        || status=$?
    if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
    [ "$status" = 0 ] || exit "$status"
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
export PATH="$PWD/.venv/bin:$PATH"
PYTHON="$PWD/.venv/bin/python" .ci/install-servers
# Static checks first (seconds; settings in pyproject.toml): lint the whole tree, type-check the packages.
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "$@"
