"""The gateway's sub-commands: serve, servers, call, config check."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx

from simgate.errors import Unreachable, UsageError
from simgate.gateway.auth.api_keys import KeyFileError, KeyStore, auth_headers
from simgate.gateway.config.execution import mode_names
from simgate.gateway.config.loader import load_config
from simgate.gateway.net import is_loopback

DEFAULT_URL = "http://127.0.0.1:8808"


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the gateway on a config of MCP servers")
    serve.add_argument("config", help="YAML or JSON config (a plain {\"mcpServers\": ...} client config works)")
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1, or the config's)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default 8808, or the config's)")
    serve.add_argument("--workers", type=_workers, default=None, metavar="N",
                       help="run N gateway processes behind the one address (default 1, or the config's "
                            "gateway.workers); sessions stay with the process that opened them")
    serve.add_argument("--insecure", action="store_true",
                       help="allow serving without client API keys: on a non-loopback address, and after the "
                            "last key is removed (else a gateway that has required keys then refuses every client)")
    serve.set_defaults(handler=_serve)

    servers = commands.add_parser("servers", help="list the servers of a running gateway")
    servers.add_argument("--url", default=DEFAULT_URL, help=f"the gateway (default {DEFAULT_URL})")
    servers.add_argument("--json", action="store_true", help="print JSON instead of a table")
    action = servers.add_mutually_exclusive_group()
    action.add_argument("--restart", metavar="SERVER", help="start SERVER again (a failed install is tried once "
                        "more, a running or stopped server restarted)")
    action.add_argument("--stop", metavar="SERVER", help="stop SERVER and keep it stopped (its calls fail at once) "
                        "until --start")
    action.add_argument("--start", metavar="SERVER", help="start SERVER after --stop")
    servers.set_defaults(handler=_servers)

    call = commands.add_parser("call", help="call one tool through a running gateway")
    call.add_argument("server")
    call.add_argument("tool")
    call.add_argument("arguments", nargs="*", metavar="key=value",
                      help="arguments; a value is parsed as JSON when it can be, else taken as a string")
    call.add_argument("--url", default=DEFAULT_URL, help=f"the gateway (default {DEFAULT_URL})")
    # Modes are checked by the gateway (its message names the known ones), as any client's are.
    call.add_argument("--mode", default=None, help=f"execution mode to request for this call: {mode_names()}")
    call.set_defaults(handler=_call)

    mode = commands.add_parser("mode", help="show or change execution modes of a running gateway")
    mode_commands = mode.add_subparsers(dest="mode_command", required=True, metavar="COMMAND")
    show = mode_commands.add_parser("show", help="the default, per-server, per-tool and per-session modes")
    show.add_argument("--url", default=DEFAULT_URL, help=f"the gateway (default {DEFAULT_URL})")
    show.set_defaults(handler=_mode_show)
    set_mode = mode_commands.add_parser("set", help="set the mode of the gateway, a server, a tool or a session")
    set_mode.add_argument("mode", help=mode_names())
    set_mode.add_argument("--server", help="only this server")
    set_mode.add_argument("--tool", help="only this tool (needs --server)")
    set_mode.add_argument("--session", help="only this session (its X-Simgate-Session or Mcp-Session-Id)")
    set_mode.add_argument("--url", default=DEFAULT_URL, help=f"the gateway (default {DEFAULT_URL})")
    set_mode.set_defaults(handler=_mode_set)
    clear_mode = mode_commands.add_parser("clear", help="drop a mode set at run time: that level follows the config "
                                                       "again (the gateway's default without options)")
    clear_mode.add_argument("--server", help="this server's setting")
    clear_mode.add_argument("--tool", help="this tool's setting (needs --server)")
    clear_mode.add_argument("--session", help="this session's setting")
    clear_mode.add_argument("--url", default=DEFAULT_URL, help=f"the gateway (default {DEFAULT_URL})")
    clear_mode.set_defaults(handler=_mode_clear)

    config = commands.add_parser("config", help="work with config files")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    check = config_commands.add_parser("check", help="validate a config file")
    check.add_argument("file")
    check.set_defaults(handler=_config_check)


def _serve(args: argparse.Namespace) -> int:
    from simgate.gateway.serve import serve

    config = load_config(args.config)
    host = args.host or config.gateway.host
    if not is_loopback(host) and not args.insecure and not _has_keys(config.gateway.keys_file):
        # Anyone who can reach the port could call every tool with the gateway's credentials.
        raise UsageError(f"refusing to listen on {host}, which is not a loopback address, without client API keys "
                         f"(none in {config.gateway.keys_file}; create one with `simgate keys create`); "
                         "pass --insecure to do it anyway")
    return serve(config, host=args.host, port=args.port, insecure=args.insecure, workers=args.workers,
                 config_path=args.config)


def _workers(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of workers: {value!r}") from None
    if not 1 <= count <= 64:
        raise argparse.ArgumentTypeError(f"--workers must be between 1 and 64, not {count}")
    return count


def _has_keys(path: str) -> bool:
    try:
        return KeyStore(path).enabled
    except KeyFileError:
        return True  # the gateway itself reports the broken file and does not start


def _config_check(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    active = config.active_servers
    print(f"{args.file}: ok, {len(config.servers)} server(s), {len(active)} enabled")
    for name, server in config.servers.items():
        where = server.url if server.transport == "http" else " ".join([server.command or "", *server.args])
        state = "" if server.active else " (disabled)"
        print(f"  {name}: {server.transport} {where}{state}")
    return 0


def _servers(args: argparse.Namespace) -> int:
    for action, doing in (("restart", "starting again"), ("stop", "stopping"), ("start", "starting")):
        name = getattr(args, action)
        if name:
            answer = _admin("POST", args.url, path=f"/admin/servers/{name}/{action}", expect=202)
            print(f"{answer['server']}: {doing} (was {answer['state']})")
            return 0
    servers = _admin("GET", args.url, path="/admin/servers")["servers"]
    if args.json:
        print(json.dumps(servers, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("server", "state", "transport", "tools", "restarts", "p50/p95/p99 ms", "last error")
    for server in servers:
        latency = server.get("latency_ms") or {}
        percentiles = "/".join("–" if latency.get(q) is None else f"{latency[q]:.1f}" for q in ("p50", "p95", "p99"))
        table.add_row(server["name"], server["state"], server["transport"], str(server["tools"]),
                      str(server["restarts"]), percentiles, server["last_error"] or "")
    Console().print(table)
    return 0


def _admin(method: str, url: str, body: dict[str, Any] | None = None, *, path: str = "/admin/modes",
           expect: int = 200) -> Any:
    """The admin API's JSON answer; an unreachable gateway or a refusal is raised (one line, exit code 2)."""
    try:
        response = httpx.request(method, f"{url.rstrip('/')}{path}", json=body, headers=auth_headers(),
                                 timeout=10)
    except httpx.HTTPError as exc:
        raise Unreachable(f"cannot reach the gateway at {url}: {exc}") from None
    if response.status_code != expect:
        raise UsageError(_error_text(response))
    return response.json()


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error") or response.text)
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"


def _mode_show(args: argparse.Namespace) -> int:
    print(json.dumps(_admin("GET", args.url), indent=2))
    return 0


def _mode_set(args: argparse.Namespace) -> int:
    body = {"mode": args.mode, "server": args.server, "tool": args.tool, "session": args.session}
    answer = _admin("PUT", args.url, {key: value for key, value in body.items() if value is not None})
    # Taken, but unchecked (the server's tool list is not known yet): said on stderr, the modes on stdout.
    for warning in answer.pop("warnings", []):
        print(f"simgate mode set: warning: {warning}", file=sys.stderr)
    print(json.dumps(answer, indent=2))
    return 0


def _mode_clear(args: argparse.Namespace) -> int:
    query = urlencode({key: value for key, value in (("server", args.server), ("tool", args.tool),
                                                     ("session", args.session)) if value is not None})
    print(json.dumps(_admin("DELETE", args.url, path=f"/admin/modes?{query}" if query else "/admin/modes"), indent=2))
    return 0


def parse_arguments(pairs: list[str]) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"argument {pair!r} is not key=value")
        try:
            arguments[key] = json.loads(value)
        except json.JSONDecodeError:
            arguments[key] = value
    return arguments


def _call(args: argparse.Namespace) -> int:
    arguments = parse_arguments(args.arguments)
    from mcp.shared.exceptions import MCPError

    from simgate.gateway.client import call_tool

    url = f"{args.url.rstrip('/')}/servers/{args.server}/mcp"
    try:
        try:
            result = anyio.run(call_tool, url, args.tool, arguments, args.mode)
        except BaseExceptionGroup as group:  # the SDK's task groups wrap the one error that matters
            raise _first_leaf(group) from None
    except MCPError as exc:
        print(json.dumps({"error": {"code": exc.code, "message": exc.message, "data": exc.data}}, indent=2))
        return 1
    except Exception as exc:  # connection refused, unknown server (404)...
        raise Unreachable(f"call failed: {exc}") from None
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 1 if result.get("isError") else 0


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    inner = group.exceptions[0]
    return _first_leaf(inner) if isinstance(inner, BaseExceptionGroup) else inner
