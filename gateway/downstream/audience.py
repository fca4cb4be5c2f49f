"""Who hears an upstream's notification that belongs to no request: the client sessions whose key may
use that server, and for a resource update only those subscribed to the resource."""

from __future__ import annotations

from dataclasses import dataclass, field

import mcp_types as types
from mcp.server.session import ServerSession

from simgate.gateway.auth.api_keys import ApiKey
from simgate.gateway.errors import TooManySubscriptions

# Each subscription is a set entry per session: a bound keeps one client from growing it without end.
MAX_SUBSCRIPTIONS = 1000


@dataclass
class Listener:
    """One client session of an endpoint, as the gateway knows it from its requests."""

    session: ServerSession
    key: ApiKey | None  # the key its latest request presented; None: keys are not in use
    subscriptions: set[str] = field(default_factory=set)

    def hears(self, server: str, notification: types.ServerNotification) -> bool:
        if self.key is not None and not self.key.allows_server(server):
            return False
        if isinstance(notification, types.ResourceUpdatedNotification):
            return str(notification.params.uri) in self.subscriptions
        return True

    def subscribed(self, method: str, uri: str) -> None:
        """Note a subscription change the upstream has accepted."""
        if method == "resources/unsubscribe":
            self.subscriptions.discard(uri)
        elif uri not in self.subscriptions:
            if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
                raise TooManySubscriptions(f"a session may hold at most {MAX_SUBSCRIPTIONS} resource subscriptions",
                                           data={"uri": uri})
            self.subscriptions.add(uri)
