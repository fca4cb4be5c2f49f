"""The gateway's file writing: `sandboxes.files`, re-exported under the name the gateway's modules use."""

from sandboxes.files import atomic_write, exclusive_lock, fsync_directory

__all__ = ["atomic_write", "exclusive_lock", "fsync_directory"]
