"""The recording store on Redis (or Valkey), shared by every gateway of a cluster.

Same interface and meaning as `DiskStore`; the layout, under the configured prefix P:

- `P r:KEY`   list of a key's recordings (JSON, exactly as `Recording` dumps it), in stored order;
- `P p:KEY`   hash "episode NUL position" -> index in that list (where each recording sits);
- `P t:SERVER NUL TOOL`  list of the tool's keys, oldest first;
- `P keys`    set of every key;
- `P tools:SERVER`  the server's last tool list (JSON);
- `P once:SERVER`   record mode `once`: the cluster's decision for this run.

Every write of recordings is one Lua script (Redis runs a script whole, alone): a recording is
stored completely with its index entries or not at all, whatever other gateways write at once.
Recordings are opaque strings to Redis, so a cassette comes out byte for byte as it went in.
The client is redis-py's synchronous one, as the store's interface is synchronous (the gateway
writes off its event loop).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
from redis.exceptions import RedisError, ResponseError, WatchError

from simgate.gateway.cache.records import Recording, corrupt, corrupt_pruned, stored_recordings
from simgate.gateway.cache.redis_errors import unavailable, unavailable_as_error, unreachable
from simgate.gateway.cache.redis_import import ImportJournal
from simgate.gateway.config.store import redacted_url
from simgate.gateway.errors import ConfigError, CorruptRecording

logger = logging.getLogger("simgate.store")

# A `once` decision lives while some gateway holds it (refreshed well within this) and ends with the run.
ONCE_TTL_S = 300

# KEYS: [1] the set of keys, then per recording (r, p, t), then one key per tool list.
# ARGV: [1] replace, [2] recordings n, then per recording (key, id, id of the previous position or '', json),
#       then one tool list JSON per tool key.
_PUT = """
local replace = ARGV[1] == '1'
local n = tonumber(ARGV[2])
local out = {}
for i = 0, n - 1 do
  local r, p, t = KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i]
  local key, id, prev, body = ARGV[3 + 4 * i], ARGV[4 + 4 * i], ARGV[5 + 4 * i], ARGV[6 + 4 * i]
  local index = redis.call('HGET', p, id)
  if index then
    if replace then
      redis.call('LSET', r, tonumber(index), body)
      out[i + 1] = 'replaced'
    else
      out[i + 1] = 'kept'
    end
  elseif prev ~= '' and redis.call('HEXISTS', p, prev) == 0 then
    out[i + 1] = 'gaps'
  else
    local length = redis.call('RPUSH', r, body)
    redis.call('HSET', p, id, length - 1)
    if length == 1 then
      redis.call('RPUSH', t, key)
      redis.call('SADD', KEYS[1], key)
    end
    out[i + 1] = 'added'
  end
end
local first_tool = 2 + 3 * n
for j = first_tool, #KEYS do
  redis.call('SET', KEYS[j], ARGV[2 + 4 * n + j - first_tool + 1])
end
return out
"""

# KEYS: r, p, t, the set of keys; ARGV: key.
_DELETE = """
local existed = redis.call('DEL', KEYS[1], KEYS[2])
redis.call('LREM', KEYS[3], 0, ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
return existed
"""


class RedisStore:
    """Recordings in Redis at `url`, every key under `prefix`."""

    def __init__(self, url: str, prefix: str = "simgate:") -> None:
        self.url = url
        self._prefix = prefix
        self._client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5,
                                            health_check_interval=30)
        self._held: set[str] = set()  # servers whose `once` decision this process keeps alive
        self._put = self._client.register_script(_PUT)
        self._delete = self._client.register_script(_DELETE)

    @classmethod
    def connect(cls, url: str, prefix: str = "simgate:") -> RedisStore:
        """Open and check that Redis answers: an unreachable one stops the start, named without its password."""
        store = cls(url, prefix)
        try:
            store._client.ping()
        except RedisError as exc:
            store.close()
            raise ConfigError(unreachable(url, exc)) from None
        return store

    # ------------------------------------------------------------------ names

    def _r(self, key: str) -> str:
        return f"{self._prefix}r:{key}"

    def _p(self, key: str) -> str:
        return f"{self._prefix}p:{key}"

    def _t(self, server: str, tool: str) -> str:
        return f"{self._prefix}t:{server}\x00{tool}"

    def _tools(self, server: str) -> str:
        return f"{self._prefix}tools:{server}"

    @property
    def _keys(self) -> str:
        return f"{self._prefix}keys"

    # ------------------------------------------------------------------ reads

    @unavailable_as_error
    def get(self, key: str) -> list[Recording]:
        # One command: a key's sequence is read as one consistent list.
        try:
            raw = self._client.lrange(self._r(key), 0, -1)
        except ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):  # the key holds a string, set, ...: Redis is fine, the value is not
                raise corrupt(key, "not a list of recordings") from None
            raise
        return stored_recordings(key, raw)

    @unavailable_as_error
    def tool_keys(self, server: str, tool: str) -> list[str]:
        keys: list[str] = self._client.lrange(self._t(server, tool), 0, -1)  # type: ignore[assignment]
        return keys

    def keys(self) -> Iterator[str]:
        try:
            yield from self._client.sscan_iter(self._keys, count=1000)
        except RedisError as exc:
            raise unavailable(self.url, exc) from None

    def all(self) -> Iterator[Recording]:
        for key in self.keys():
            yield from self.get(key)

    @unavailable_as_error
    def load_tools(self, server: str) -> list[dict[str, Any]]:
        raw = self._client.get(self._tools(server))
        return json.loads(raw) if raw else []

    # ------------------------------------------------------------------ writes

    def put(self, recording: Recording, *, replace: bool) -> bool:
        counts = self.put_many([recording], replace=replace)
        return bool(counts["added"] or counts["replaced"])

    @unavailable_as_error
    def put_many(self, recordings: Iterable[Recording], *, replace: bool,
                 tools: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, int]:
        """One script: every recording placed (as `DiskStore.put_many` does) and every tool list set, or none."""
        ordered = sorted(recordings, key=lambda r: (r.key, r.episode, r.position))
        keys: list[str] = [self._keys]
        args: list[Any] = ["1" if replace else "0", len(ordered)]
        for recording in ordered:
            keys += [self._r(recording.key), self._p(recording.key), self._t(recording.server, recording.tool)]
            previous = _place_id(recording.episode, recording.position - 1) if recording.position > 0 else ""
            args += [recording.key, _place_id(recording.episode, recording.position), previous,
                     recording.model_dump_json()]
        for server, listed in (tools or {}).items():
            keys.append(self._tools(server))
            args.append(json.dumps(listed))
        counts = {"added": 0, "replaced": 0, "kept": 0, "gaps": 0}
        if len(keys) == 1:
            return counts
        for outcome in self._put(keys=keys, args=args):
            counts[outcome] += 1
        return counts

    @unavailable_as_error
    def put_batches(self, batches: Iterable[list[Recording]], *, replace: bool,
                    tools: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, int]:
        """One script per batch (one for all would need the whole import in memory), each journaled first; on
        any failure the journal takes every batch back (`redis_import`). The tool lists go last, in one MULTI."""
        journal = ImportJournal(self._client, self._prefix, uuid.uuid4().hex, self._r, self._p, self._keys)
        counts = {"added": 0, "replaced": 0, "kept": 0, "gaps": 0}
        try:
            for batch in batches:
                journal.note(batch, replace, lambda r: self._t(r.server, r.tool),
                             lambda r: _place_id(r.episode, r.position))
                for outcome, n in self.put_many(batch, replace=replace).items():
                    counts[outcome] += n
            if tools:
                with self._client.pipeline() as pipe:
                    for server, listed in tools.items():
                        pipe.set(self._tools(server), json.dumps(listed))
                    pipe.execute()
        except BaseException:
            try:
                journal.undo()
            except RedisError as exc:  # Redis went away: what was written stays, with its journal (for a day)
                logger.error("taking back a failed import failed (%s); its journal is %s", exc, journal.name)
                raise
            journal.close()
            raise
        journal.close()
        return counts

    @unavailable_as_error
    def save_tools(self, server: str, tools: list[dict[str, Any]]) -> None:
        self._client.set(self._tools(server), json.dumps(tools))

    @unavailable_as_error
    def delete(self, key: str) -> bool:
        try:
            recordings = self.get(key)
        except CorruptRecording:
            recordings = []  # deleting it is how a corrupt value is repaired
        index = self._t(recordings[0].server, recordings[0].tool) if recordings else f"{self._prefix}t:"
        return bool(self._delete(keys=[self._r(key), self._p(key), index, self._keys], args=[key]))

    @unavailable_as_error
    def prune(self, *, expired_only: bool = True, server: str | None = None, tool: str | None = None) -> int:
        """As `DiskStore.prune`; each key is rewritten in a WATCH/MULTI transaction (retried if a gateway
        writes the key meanwhile), so a recording added during the prune is never lost."""
        removed = 0
        now = time.time()
        for key in list(self.keys()):
            if corrupt_pruned(self, key, expired_only, server, tool):
                continue
            with self._client.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(self._r(key))
                        cut = self._prune_key(pipe, key, expired_only, server, tool, now)
                        pipe.execute()
                        break
                    except WatchError:
                        continue  # a gateway wrote this key meanwhile: read it again
            removed += cut
        return removed

    def _prune_key(self, pipe: Any, key: str, expired_only: bool, server: str | None, tool: str | None,
                   now: float) -> int:
        raw = pipe.lrange(self._r(key), 0, -1)
        recordings = stored_recordings(key, raw)
        first = recordings[0] if recordings else None
        if first is None or (server is not None and first.server != server) or \
                (tool is not None and first.tool != tool):
            pipe.multi()
            return 0
        cut: dict[str, int] = {}  # episode -> first position removed: a sequence cannot replay past a hole
        for recording in recordings:
            if not expired_only or (recording.expires_at is not None and recording.expires_at < now):
                cut[recording.episode] = min(cut.get(recording.episode, recording.position), recording.position)
        kept_at = [i for i, r in enumerate(recordings) if r.position < cut.get(r.episode, r.position + 1)]
        if len(kept_at) == len(recordings):
            pipe.multi()  # nothing to write: an empty transaction ends the watch
            return 0
        kept = [recordings[i] for i in kept_at]
        bodies = [raw[i] for i in kept_at]  # as stored, not dumped again
        pipe.multi()
        pipe.delete(self._r(key), self._p(key))
        if kept:
            pipe.rpush(self._r(key), *bodies)
            pipe.hset(self._p(key), mapping={_place_id(r.episode, r.position): i for i, r in enumerate(kept)})
        else:
            pipe.lrem(self._t(first.server, first.tool), 0, key)
            pipe.srem(self._keys, key)
        return len(recordings) - len(kept)

    # ------------------------------------------------------------------ record mode `once`

    @unavailable_as_error
    def decide_once(self, server: str, recorded_before: Callable[[], bool]) -> bool:
        """The first gateway to decide sets the decision (SET NX); every other one reads it."""
        name = f"{self._prefix}once:{server}"
        held = self._client.get(name)
        if held is None:
            self._client.set(name, "1" if recorded_before() else "0", nx=True, ex=ONCE_TTL_S)
            held = self._client.get(name)
        self._client.expire(name, ONCE_TTL_S)
        self._held.add(server)
        return held == "1"

    @unavailable_as_error
    def hold_once(self) -> None:
        """Keep the decisions this gateway read alive; a stopped cluster's decisions expire with it, so
        the next run decides anew (run by the gateway every ONCE_TTL_S / 5 seconds)."""
        if not self._held:
            return
        with self._client.pipeline(transaction=False) as pipe:
            for server in sorted(self._held):
                pipe.expire(f"{self._prefix}once:{server}", ONCE_TTL_S)
            pipe.execute()

    # ------------------------------------------------------------------ life

    def describe(self) -> str:
        return f"{redacted_url(self.url)} (prefix {self._prefix!r})"

    def close(self) -> None:
        self._client.close()


def _place_id(episode: str, position: int) -> str:
    return f"{episode}\x00{position}"
