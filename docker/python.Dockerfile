# Image for Python/uv MCP servers, built by sandboxes/docker/images.py with `--network none` and no
# registry. The build context's rootfs/ holds files prepared on the host: the interpreter the servers'
# venvs point at (at the same absolute path, so shebangs and pyvenv.cfg keep working), its standard
# library and the shared libraries they load. The servers themselves are mounted read-only at run time.
ARG BASE
FROM ${BASE}
COPY rootfs/ /
ARG INTERPRETER
ENV LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# A missing shared library fails the build here, not the first server that imports the module.
RUN "$INTERPRETER" -I -c "import ssl, sqlite3, ctypes, zoneinfo, decimal, lzma, bz2, zlib, uuid, json, asyncio"
USER 65534:65534
