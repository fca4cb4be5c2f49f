"""Every private detail of a library that simgate relies on, in one place.

A library promises nothing about its private names: any release may rename or drop one, and code reaching
for it with `getattr(obj, "_name", default)` would go on quietly doing the wrong thing (a session count of
zero, replica session ids left untagged). So each use goes through this module:

- `DETAILS` lists them: whose, which, where simgate uses it and why no public way does;
- an accessor per detail reads it and raises `PrivateApiChanged` when it is gone;
- `check()` probes them all, and the gateway calls it as it starts (`gateway.serve`): a library version
  that lacks one stops the gateway at once, with a message naming the detail, the installed version and
  the versions it was checked against, rather than failing calls later. A version outside `CHECKED` whose
  details are all present only gets a warning.

`mcp.shared._stream_protocols` (the SDK's stream `Protocol`s) is imported for type checking only, so no
release can break it at run time; mypy reports it in CI instead.
"""

from __future__ import annotations

import asyncio.subprocess
import dataclasses
import importlib
import platform
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import Any

from simgate.errors import SimgateError

# The versions each library was checked against (prefixes of its version string).
CHECKED: dict[str, tuple[str, ...]] = {"mcp": ("2.3.",), "anyio": ("4.",), "python": ("3.11.", "3.12.", "3.13.")}


class PrivateApiChanged(SimgateError):
    """A library no longer has a private detail simgate relies on (see `DETAILS`)."""


@dataclass(frozen=True)
class PrivateDetail:
    library: str  # a distribution name of `CHECKED`
    name: str
    used_in: str
    why: str
    present: Callable[[], bool]


def installed(library: str) -> str:
    if library == "python":
        return platform.python_version()
    try:
        return version(library)
    except PackageNotFoundError:
        return "not installed"


def _checked(library: str) -> str:
    return f"{library} " + " or ".join(prefix.rstrip(".") + ".x" for prefix in CHECKED[library])


def _changed(library: str, name: str) -> PrivateApiChanged:
    return PrivateApiChanged(f"{library} {installed(library)} has no {name}, a private detail simgate relies on "
                             f"(checked against {_checked(library)}): install a checked version")


def _attribute(obj: object, name: str, library: str, owner: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise _changed(library, f"{owner}.{name}") from None


# ------------------------------------------------------------------ accessors, one per detail


def session_transports(manager: Any) -> dict[str, Any]:
    """The live sessions of an `mcp` `StreamableHTTPSessionManager`, by session id."""
    return _attribute(manager, "_server_instances", "mcp", "StreamableHTTPSessionManager")  # type: ignore[no-any-return]


def session_owners(manager: Any) -> dict[str, Any]:
    """Who opened each session of a `StreamableHTTPSessionManager`, by session id."""
    return _attribute(manager, "_session_owners", "mcp", "StreamableHTTPSessionManager")  # type: ignore[no-any-return]


def sse_sessions(transport: Any) -> Mapping[Any, Any]:
    """The sessions of an `mcp` `SseServerTransport` whose stream is open (by UUID)."""
    return _attribute(transport, "_read_stream_writers", "mcp", "SseServerTransport")  # type: ignore[no-any-return]


def subprocess_transport(process: Any) -> asyncio.SubprocessTransport:
    """The asyncio transport under an `anyio` process (to close a pipe a surviving grandchild holds open)."""
    inner = _attribute(process, "_process", "anyio", "Process")
    return _attribute(inner, "_transport", "python", "asyncio.subprocess.Process")  # type: ignore[no-any-return]


def socket_under(stream: Any) -> Any:
    """The socket under the `socket.SocketIO` the `docker` SDK's `attach_socket` returns (else `stream`)."""
    if isinstance(stream, socket.SocketIO):
        return _attribute(stream, "_sock", "python", "socket.SocketIO")
    return stream


def regex_parser() -> ModuleType:
    """The standard library's regular-expression parser (`re._parser`)."""
    try:
        return importlib.import_module("re._parser")
    except ImportError:
        raise _changed("python", "re._parser") from None


# ------------------------------------------------------------------ probes


def _assigned_in_init(cls: type, name: str) -> bool:
    """Whether `cls.__init__` sets `self.<name>`: an instance attribute, probed without making an instance."""
    init = getattr(cls, "__init__", None)
    code = getattr(init, "__code__", None)
    return code is not None and name in code.co_names


def _mcp_manager_sets(name: str) -> bool:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    return _assigned_in_init(StreamableHTTPSessionManager, name)


def _mcp_admits_sessions() -> bool:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    return callable(getattr(StreamableHTTPSessionManager, "_admit_session", None))


def _mcp_sse_writers() -> bool:
    from mcp.server.sse import SseServerTransport
    return _assigned_in_init(SseServerTransport, "_read_stream_writers")


def _anyio_process_field() -> bool:
    from anyio._backends._asyncio import Process
    return dataclasses.is_dataclass(Process) and "_process" in {field.name for field in dataclasses.fields(Process)}


def _regex_parser_present() -> bool:
    try:
        importlib.import_module("re._parser")
    except ImportError:
        return False
    return True


DETAILS: tuple[PrivateDetail, ...] = (
    PrivateDetail("mcp", "StreamableHTTPSessionManager._server_instances", "gateway.downstream.inbound, "
                  "gateway.replicas.sessions", "the sessions to count (a limit), to find one for the direct "
                  "path, to rename on admission", lambda: _mcp_manager_sets("_server_instances")),
    PrivateDetail("mcp", "StreamableHTTPSessionManager._session_owners", "gateway.replicas.sessions",
                  "a session's owner moves with its renamed id", lambda: _mcp_manager_sets("_session_owners")),
    PrivateDetail("mcp", "StreamableHTTPSessionManager._admit_session", "gateway.replicas.sessions",
                  "overridden to tag a new session's id with its replica before its first answer names it",
                  _mcp_admits_sessions),
    PrivateDetail("mcp", "SseServerTransport._read_stream_writers", "gateway.downstream.legacy_sse",
                  "the legacy sessions whose stream is open (notifications reach them)", _mcp_sse_writers),
    PrivateDetail("anyio", "Process._process", "gateway.upstream.stdio",
                  "the asyncio process under anyio's, for its transport", _anyio_process_field),
    PrivateDetail("python", "asyncio.subprocess.Process._transport", "gateway.upstream.stdio",
                  "closed when a surviving grandchild holds a pipe (else it stays open and warns at GC)",
                  lambda: _assigned_in_init(asyncio.subprocess.Process, "_transport")),
    PrivateDetail("python", "socket.SocketIO._sock", "sandboxes.docker.stdio",
                  "the docker attach connection as a socket of our own (non-blocking, duplicated)",
                  lambda: _assigned_in_init(socket.SocketIO, "_sock")),
    PrivateDetail("python", "re._parser", "simulators.schema",
                  "a string for a tool's `pattern`, generated from the parsed expression", _regex_parser_present),
)


def check() -> list[str]:
    """Probe every detail: raise `PrivateApiChanged` naming each one missing; else the warnings for libraries
    at a version outside `CHECKED`."""
    missing = []
    for detail in DETAILS:
        try:
            present = detail.present()
        except Exception:  # a probe's own import failing means the detail moved
            present = False
        if not present:
            missing.append(detail)
    if missing:
        named = "; ".join(f"{d.library} {installed(d.library)} has no {d.name} (used in {d.used_in})" for d in missing)
        checked = ", ".join(_checked(library) for library in sorted({d.library for d in missing}))
        raise PrivateApiChanged(f"{named}: private details simgate relies on; it was checked against {checked}: "
                                "install a checked version")
    return [f"{library} {installed(library)} is not a version simgate was checked against ({_checked(library)}); "
            "every private detail it relies on is present"
            for library, prefixes in CHECKED.items() if not installed(library).startswith(prefixes)]
