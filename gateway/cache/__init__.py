"""Recorded tool calls: cache keys, the recording model, and the store interface with its diskcache default."""
