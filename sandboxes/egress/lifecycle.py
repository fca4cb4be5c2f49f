"""The egress proxy a server's sandbox policy asks for, for as long as the server runs."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from simgate.sandboxes.egress.allowlist import NetworkAllow
from simgate.sandboxes.egress.mount import EgressMount
from simgate.sandboxes.egress.proxy import serving_proxy
from simgate.sandboxes.policy import SandboxPolicy


@asynccontextmanager
async def egress_for(server: str, policy: SandboxPolicy | None, decisions: Counter[str] | None = None
                     ) -> AsyncIterator[EgressMount | None]:
    """Yield the mount of a running proxy when the policy has an allowlist, else None; its decisions are
    counted in `decisions` when given."""
    if policy is None or not isinstance(policy.network, NetworkAllow):
        yield None
        return
    async with serving_proxy(server, policy.network, decisions=decisions) as (_, socket_path):
        yield EgressMount(host_socket=socket_path)
