"""Config models of rate limits, upstream quotas and fault injection (all off unless configured).

- `RateLimit`: a token bucket per (client, server, tool); a call over it fails at once with `-32006`.
- `UpstreamQuota`: one bucket per upstream server shared by every client; a call that finds it empty
  waits its turn (first come, first served) in a bounded queue, and fails with `-32006` only when the
  queue is full or its wait would exceed `max_wait`.
- `FaultConfig`: seeded, per server or tool: JSON-RPC/tool errors, added latency, timeouts and
  malformed results, for robustness testing and edge-case training data.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, model_validator

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class RateLimit(BaseModel):
    """A token bucket: `rate` calls per second on average, up to `burst` at once."""

    model_config = ConfigDict(extra="forbid")

    rate: PositiveFloat = Field(description="calls per second (refill rate of the bucket)")
    burst: Annotated[int, Field(ge=1)] | None = Field(
        None, description="bucket size: calls allowed at once (default: one second's worth, at least 1)")

    @model_validator(mode="after")
    def _default_burst(self) -> RateLimit:
        if self.burst is None:
            self.burst = max(1, math.ceil(self.rate))
        return self


class UpstreamQuota(RateLimit):
    """What one upstream server may receive, from all clients together; excess calls queue."""

    max_queue: NonNegativeInt = Field(100, description="calls that may wait for the quota at once (0: none)")
    max_wait: NonNegativeFloat = Field(30.0, description="seconds a call may wait for the quota before failing")


class FaultConfig(BaseModel):
    """Seeded fault injection. Per call one draw decides timeout / error / malformed / none, with these
    rates as exact probabilities (so they may add up to at most 1); latency is added independently."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="the same seed gives the same sequence of faults for each tool")
    error_rate: Probability = Field(0.0, description="share of calls that fail with `error_code`")
    error_code: int = Field(-32603, description="JSON-RPC error code of an injected error")
    error_message: str = Field("injected fault: internal error", description="message of an injected error")
    error_as: Literal["jsonrpc", "tool_result"] = Field(
        "jsonrpc", description="an injected error as a JSON-RPC error, or as a result with isError: true")
    latency_ms: NonNegativeFloat = Field(0.0, description="milliseconds added to every call")
    latency_jitter_ms: NonNegativeFloat = Field(0.0, description="up to this many more milliseconds, uniform")
    timeout_rate: Probability = Field(0.0, description="share of calls that hang, then fail as a timeout (-32002)")
    timeout_after_s: PositiveFloat | None = Field(
        None, description="seconds a simulated timeout hangs (default: the server's call_timeout)")
    malformed_rate: Probability = Field(0.0, description="share of calls whose result is replaced by a malformed one")

    @model_validator(mode="after")
    def _check_rates(self) -> FaultConfig:
        if self.timeout_rate + self.error_rate + self.malformed_rate > 1.0 + 1e-9:
            raise ValueError("timeout_rate + error_rate + malformed_rate must not exceed 1 (one outcome per call)")
        return self

    @property
    def active(self) -> bool:
        return bool(self.error_rate or self.timeout_rate or self.malformed_rate or self.latency_ms
                    or self.latency_jitter_ms)
