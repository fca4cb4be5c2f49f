"""The `docker` sandbox backend: each stdio server in a hardened container of a local Docker engine.

`engine` connects to the engine, `runtime` finds what a server needs from the host (its interpreter
and shared libraries), `images` builds the base/Python/Node images without any registry, `container`
turns a server's policy into a container spec, `stdio` speaks MCP over the container's attach
socket, and `sweep` removes containers an earlier gateway left behind.
"""
