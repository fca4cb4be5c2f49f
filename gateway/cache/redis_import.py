"""An import into Redis that can be taken back: what each batch is about to change, kept in Redis beside it.

One Lua script cannot write an unbounded import without building all of it in memory (its arguments, or
a MULTI's queue on the server), so `RedisStore.put_batches` writes batch by batch, each one script as
`put_many`, and journals first what a batch will change, under `P import:ID:*`:

- `len`  hash KEY -> "original length NUL its tool index": a key's recordings are only ever appended
  (RPUSH) past that length;
- `old`  hash "KEY NUL episode NUL position" -> the body a `replace` overwrites (the first one: the store's).

Undo trims each key back to its length (dropping the places and, for a key that did not exist, its tool
index entry and set membership) and puts the old bodies back. The journal expires after a day: an import
killed half-way (the process, or Redis gone) leaves what it wrote, and its journal for inspection. A
gateway writing the same keys during an import would have its recordings there taken back too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from simgate.gateway.cache.records import Recording

logger = logging.getLogger("simgate.store")

JOURNAL_TTL_S = 86400
_SCAN = 500

# KEYS: [1] len journal, [2] old journal, then per recording (r, p). ARGV: [1] replace, [2] n, then per recording
# (key, place id, tool index key).
_JOURNAL = """
local replace = ARGV[1] == '1'
local n = tonumber(ARGV[2])
for i = 0, n - 1 do
  local r, p = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local key, id, index_key = ARGV[3 + 3 * i], ARGV[4 + 3 * i], ARGV[5 + 3 * i]
  redis.call('HSETNX', KEYS[1], key, redis.call('LLEN', r) .. '\\0' .. index_key)
  if replace then
    local index = redis.call('HGET', p, id)
    if index then
      redis.call('HSETNX', KEYS[2], key .. '\\0' .. id, redis.call('LINDEX', r, tonumber(index)))
    end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[#ARGV])
redis.call('EXPIRE', KEYS[2], ARGV[#ARGV])
"""

# KEYS: r, p, the tool index, the set of keys. ARGV: key, original length.
_TRIM = """
local original = tonumber(ARGV[2])
local places = redis.call('HGETALL', KEYS[2])
for i = 1, #places, 2 do
  if tonumber(places[i + 1]) >= original then
    redis.call('HDEL', KEYS[2], places[i])
  end
end
if original == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('LREM', KEYS[3], 0, ARGV[1])
  redis.call('SREM', KEYS[4], ARGV[1])
else
  redis.call('LTRIM', KEYS[1], 0, original - 1)
end
"""

# KEYS: r, p. ARGV: place id, the old body.
_RESTORE = """
local index = redis.call('HGET', KEYS[2], ARGV[1])
if index then
  redis.call('LSET', KEYS[1], tonumber(index), ARGV[2])
end
"""


class ImportJournal:
    """What one import changed, so that it can be taken back (see the module's doc)."""

    def __init__(self, client: redis.Redis, prefix: str, name: str, r: Callable[[str], str],
                 p: Callable[[str], str], keys_set: str) -> None:
        self._client = client
        self.name = f"{prefix}import:{name}:*"
        self._len = f"{prefix}import:{name}:len"
        self._old = f"{prefix}import:{name}:old"
        self._r, self._p, self._keys_set = r, p, keys_set
        self._journal = client.register_script(_JOURNAL)
        self._trim = client.register_script(_TRIM)
        self._restore = client.register_script(_RESTORE)

    def note(self, batch: list[Recording], replace: bool, index_key: Callable[[Recording], str],
             place_id: Callable[[Recording], str]) -> None:
        """Before a batch is written: each key's length, and (with `replace`) the bodies it may overwrite."""
        keys: list[str] = [self._len, self._old]
        args: list[Any] = ["1" if replace else "0", len(batch)]
        for recording in batch:
            keys += [self._r(recording.key), self._p(recording.key)]
            args += [recording.key, place_id(recording), index_key(recording)]
        self._journal(keys=keys, args=[*args, JOURNAL_TTL_S])

    def undo(self) -> None:
        """Put every key the import touched back as the journal found it."""
        for field, body in self._client.hscan_iter(self._old, count=_SCAN):
            key, place = field.split("\x00", 1)
            self._restore(keys=[self._r(key), self._p(key)], args=[place, body])
        for key, noted in self._client.hscan_iter(self._len, count=_SCAN):
            length, index_key = noted.split("\x00", 1)
            self._trim(keys=[self._r(key), self._p(key), index_key, self._keys_set], args=[key, length])

    def close(self) -> None:
        self._client.delete(self._len, self._old)
