"""Aggregated tool names: valid OpenAI function names, stable, and free of clashes."""

from __future__ import annotations

import random
import re
import string

from simgate.gateway.naming import exposed_name, exposed_names, server_prefix

OPENAI_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def test_plain_names_are_readable() -> None:
    assert exposed_name("time", "get_current_time") == "time__get_current_time"
    assert exposed_name("my-server", "do-it") == "my-server__do-it"


def test_awkward_names_become_valid_and_stable() -> None:
    for server, tool in [("github.com/org/servers/tree/main/src/fetch", "fetch"), ("a", "x" * 200),
                         ("server with spaces", "tool.with/dots"), ("ünïcödé", "naïve tool"), ("a__b", "c"),
                         ("trailing_", "t"), ("a", "")]:
        name = exposed_name(server, tool)
        assert OPENAI_NAME.match(name), name
        assert name == exposed_name(server, tool)  # a pure function of the two names


def test_names_do_not_depend_on_other_servers() -> None:
    before = exposed_names("alpha", ["search", "fetch"])
    # Adding or removing other servers cannot change alpha's names: they are computed from alpha alone.
    assert before == exposed_names("alpha", ["search", "fetch"])
    assert set(before) == {"alpha__search", "alpha__fetch"}


def test_no_clashes_between_servers_or_tools() -> None:
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "_-./ :"
    servers = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(300)}
    servers |= {"a", "a_", "a__", "a__b", "a_b", "a-b", "A"}
    seen: dict[str, tuple[str, str]] = {}
    for server in servers:
        tools = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 90))) for _ in range(20)]
        tools += ["x", "x_", "x.y", "x_y"]
        for exposed, tool in exposed_names(server, tools).items():
            assert OPENAI_NAME.match(exposed)
            assert seen.setdefault(exposed, (server, tool)) == (server, tool), exposed
    prefixes = {server_prefix(server) for server in servers}
    assert len(prefixes) == len(servers)
    assert all("__" not in prefix and not prefix.endswith("_") for prefix in prefixes)


def test_a_tool_named_like_a_hash_does_not_collide() -> None:
    hashed = exposed_name("s", "a.b")  # s__a_b_<digest>
    colliding_tool = hashed.removeprefix("s__")
    names = exposed_names("s", [colliding_tool, "a.b"])
    assert len(names) == 2 and set(names.values()) == {colliding_tool, "a.b"}
