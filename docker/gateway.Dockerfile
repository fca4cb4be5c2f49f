# The simgate gateway. Build from the repository root:
#   docker build -f docker/gateway.Dockerfile -t simgate-gateway .
FROM python:3.11-slim

# Node for npx-launched MCP servers; git for servers that need it. No compilers: wheels only.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/simgate
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY simulators ./simulators
COPY sandboxes ./sandboxes
COPY runner ./runner
COPY simgate ./simgate
# The redis extra: the client for `gateway.store: {backend: redis}` (docker/compose.yaml uses it).
RUN pip install --no-cache-dir ".[redis]" \
    && useradd --system --create-home --home-dir /var/lib/simgate simgate

USER simgate
WORKDIR /var/lib/simgate
EXPOSE 8808
# Exec form, so SIGTERM reaches the gateway and it stops its upstream servers cleanly.
ENTRYPOINT ["simgate", "serve"]
CMD ["/etc/simgate/simgate.yaml", "--host", "0.0.0.0", "--port", "8808", "--insecure"]
