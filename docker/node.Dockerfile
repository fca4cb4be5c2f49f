# Image for Node MCP servers, built by sandboxes/docker/images.py with `--network none` and no
# registry. The build context's rootfs/ holds the host's node binary (at the same absolute path) and
# the shared libraries it loads; each server's `npm install --prefix` directory is mounted read-only
# at run time.
ARG BASE
FROM ${BASE}
COPY rootfs/ /
ARG INTERPRETER
ENV LANG=C.UTF-8 NODE_ENV=production
RUN "$INTERPRETER" -e "require('crypto'); require('zlib'); require('child_process')"
USER 65534:65534
