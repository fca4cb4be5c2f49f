"""The vault file: every secret encrypted with AES-GCM (256-bit key, a fresh 96-bit nonce per value,
the secret's name as associated data, so a value cannot be moved to another name).

File format (JSON, version 1)::

    {"simgate_vault": 1, "key_id": "<16 hex>",
     "secrets": {"NAME": {"nonce": "<base64>", "ciphertext": "<base64>", "updated_at": "<ISO time>"}}}

`key_id` is a hash of the key (not the key): it tells a wrong key from a corrupt file. Every write
is atomic (a temp file beside the vault, fsynced, `os.replace`, mode 0600) and serialized by an
advisory lock, so readers (a running gateway) always see a whole file.

The key comes from, in order: the environment variable `SIMGATE_VAULT_KEY` (base64 of 32 bytes),
a key file (default `vault.key` beside the vault; refused unless only its owner can read it), or
the OS keyring when the optional `keyring` package is importable. The first `set` creates a key
file when there is no key yet.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import secrets as random
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from simgate import jsontext
from simgate.errors import SimgateError
from simgate.files import atomic_write, exclusive_lock, fsync_directory
from simgate.gateway.vault.refs import NAME

ENV_KEY = "SIMGATE_VAULT_KEY"
KEYRING_SERVICE = "simgate-vault"
VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
DEFAULT_VAULT = Path(".simgate/vault.json")
KEY_FILE_NAME = "vault.key"


class VaultError(SimgateError):
    """A vault or key that cannot be used; the message says which file and why (never a value)."""


@dataclass(frozen=True)
class VaultKey:
    key: bytes
    kind: Literal["env", "file", "keyring"]
    where: str  # a description: "the environment variable ...", "key file ...", "the OS keyring (...)"
    path: Path | None = None

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    def encoded(self) -> str:
        return base64.b64encode(self.key).decode("ascii")


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"simgate-vault-key-id\0" + key).hexdigest()[:16]


def new_key() -> bytes:
    return random.token_bytes(KEY_BYTES)


def decode_key(text: str, where: str) -> bytes:
    """A key as base64 (standard or URL-safe, padding optional) of exactly 32 bytes."""
    cleaned = "".join(text.split())
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        key = base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise VaultError(f"{where} is not a base64 key") from None
    if len(key) != KEY_BYTES:
        raise VaultError(f"{where} holds {len(key)} bytes; a vault key is {KEY_BYTES} bytes of base64 "
                         "(make one with: python -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())')")
    return key


# ------------------------------------------------------------------------------------------ files


def read_key_file(path: Path) -> bytes:
    """Read a key file, refusing one that anyone but its owner may read or write."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise VaultError(f"key file {path} does not exist") from None
    except OSError as exc:
        raise VaultError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise VaultError(f"key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise VaultError(f"key file {path} is accessible by group or others (mode {info.st_mode & 0o777:04o}); "
                             f"refusing to use it: run `chmod 600 {path}` (and consider rotating the key)")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise VaultError(f"key file {path} belongs to another user (uid {info.st_uid}); refusing to use it")
        text = handle.read(4096)
    try:
        return decode_key(text.decode("ascii"), f"key file {path}")
    except UnicodeDecodeError:
        raise VaultError(f"key file {path} is not a base64 key") from None


def write_key_file(path: Path, key: bytes) -> None:
    atomic_write(path, base64.b64encode(key) + b"\n", mode=0o600)


def _keyring() -> Any | None:
    try:
        import keyring  # type: ignore[import-not-found]  # optional
    except Exception:  # noqa: BLE001 - a broken optional package is as good as none
        return None
    return keyring


def _keyring_get(user: str) -> str | None:
    keyring = _keyring()
    if keyring is None:
        return None
    try:
        return keyring.get_password(KEYRING_SERVICE, user)
    except Exception:  # noqa: BLE001 - no usable backend: as if there were no keyring
        return None


def _keyring_set(user: str, value: str) -> None:
    keyring = _keyring()
    if keyring is None:
        raise VaultError("the keyring package is not available")
    try:
        keyring.set_password(KEYRING_SERVICE, user, value)
    except Exception as exc:  # noqa: BLE001 - any backend failure becomes one clear error
        raise VaultError(f"cannot store the key in the OS keyring: {exc}") from None


def _keyring_delete(user: str) -> None:
    keyring = _keyring()
    if keyring is not None:
        with contextlib.suppress(Exception):
            keyring.delete_password(KEYRING_SERVICE, user)


# ------------------------------------------------------------------------------------------ the vault


@dataclass
class _Entry:
    nonce: bytes
    ciphertext: bytes
    updated_at: str


@dataclass
class _Document:
    key_id: str | None
    entries: dict[str, _Entry]


class Vault:
    """One vault file and the way to its key. Nothing is read until asked; nothing is cached."""

    def __init__(self, path: str | Path = DEFAULT_VAULT, key_file: str | Path | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.key_file = Path(key_file) if key_file is not None else self.path.parent / KEY_FILE_NAME
        self._environ = os.environ if environ is None else environ

    @property
    def _lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @property
    def _pending_key_file(self) -> Path:
        return self.key_file.with_name(self.key_file.name + ".new")

    @property
    def _keyring_user(self) -> str:
        return str(self.path.resolve())

    def exists(self) -> bool:
        return self.path.exists()

    def stamp(self) -> tuple[Any, ...]:
        """Changes whenever the vault file or its key file is replaced (for watchers)."""
        def one(path: Path) -> tuple[int, int, int] | None:
            try:
                info = os.stat(path)
            except OSError:
                return None
            return info.st_mtime_ns, info.st_size, info.st_ino
        return one(self.path), one(self.key_file)

    # ------------------------------------------------------------------ keys

    def find_key(self) -> VaultKey | None:
        """The key by the documented precedence, or None when there is none at all."""
        from_env = self._environ.get(ENV_KEY)
        if from_env:
            return VaultKey(decode_key(from_env, f"the environment variable {ENV_KEY}"), "env",
                            f"the environment variable {ENV_KEY}")
        if self.key_file.exists() or self.key_file.is_symlink():
            return VaultKey(read_key_file(self.key_file), "file", f"key file {self.key_file}", self.key_file)
        stored = _keyring_get(self._keyring_user)
        if stored:
            where = f"the OS keyring (service {KEYRING_SERVICE!r}, user {self._keyring_user!r})"
            return VaultKey(decode_key(stored, where), "keyring", where)
        return None

    def key(self) -> VaultKey:
        key = self.find_key()
        if key is None:
            raise VaultError(f"no key for vault {self.path}: set {ENV_KEY}, or provide the key file {self.key_file}"
                             + (" (or a key in the OS keyring)" if _keyring() is not None else ""))
        return key

    def _matching_key(self, document: _Document, *, finish_rotation: bool = False) -> VaultKey:
        """The key that opens `document`; a rotation interrupted after the vault was rewritten is completed."""
        key = self.key()
        if document.key_id is None or key.key_id == document.key_id:
            return key
        pending = self._pending_key(key)
        if pending is not None and pending.key_id == document.key_id:
            if finish_rotation:
                self._commit_key(key, pending)
            return pending
        raise VaultError(f"wrong key for vault {self.path}: it was encrypted with key {document.key_id}, but "
                         f"{key.where} holds key {key.key_id}")

    def _pending_key(self, current: VaultKey) -> VaultKey | None:
        try:
            if current.kind == "keyring":
                stored = _keyring_get(self._keyring_user + "#new")
                return VaultKey(decode_key(stored, "the pending key"), "keyring", current.where) if stored else None
            if self._pending_key_file.exists():
                return VaultKey(read_key_file(self._pending_key_file), current.kind, current.where, current.path)
        except VaultError:
            return None
        return None

    def _commit_key(self, current: VaultKey, new: VaultKey) -> None:
        if current.kind == "keyring":
            _keyring_set(self._keyring_user, new.encoded())
            _keyring_delete(self._keyring_user + "#new")
        elif current.kind == "file":
            os.replace(self._pending_key_file, self.key_file)
            fsync_directory(self.key_file.parent)

    # ------------------------------------------------------------------ reading

    def _read(self) -> _Document:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return _Document(None, {})
        except OSError as exc:
            raise VaultError(f"cannot read vault {self.path}: {exc.strerror or exc}") from None
        return _parse(raw, self.path)

    def _decrypt(self, document: _Document, key: VaultKey, name: str) -> str:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        entry = document.entries[name]
        try:
            plain = AESGCM(key.key).decrypt(entry.nonce, entry.ciphertext, name.encode("utf-8"))
        except InvalidTag:
            raise VaultError(f"vault {self.path} is corrupt: secret {name!r} fails authentication "
                             "(edited, truncated, or encrypted under another name)") from None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:
            raise VaultError(f"vault {self.path} is corrupt: secret {name!r} is not UTF-8 text") from None

    def names(self) -> list[str]:
        """Secret names; the key is checked against the file and every value is authenticated."""
        return sorted(self.read_all())

    def read_all(self) -> dict[str, str]:
        """Every secret, decrypted (an empty dict when the vault file does not exist)."""
        document = self._read()
        if not document.entries and document.key_id is None:
            return {}
        key = self._matching_key(document)
        return {name: self._decrypt(document, key, name) for name in sorted(document.entries)}

    def get(self, name: str) -> str:
        document = self._read()
        if name not in document.entries:
            raise VaultError(f"vault {self.path} has no secret named {name!r}")
        return self._decrypt(document, self._matching_key(document), name)

    # ------------------------------------------------------------------ writing

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return exclusive_lock(self._lock_path)

    def _write(self, document: _Document) -> None:
        atomic_write(self.path, _serialize(document), mode=0o600)

    def set(self, name: str, value: str) -> Path | None:
        """Store `value` under `name`; returns the key file created for it, if there was no key yet."""
        check_name(name)
        if value == "":
            raise VaultError("refusing to store an empty value")
        with self._locked():
            document = self._read()
            created: Path | None = None
            if self.find_key() is None:
                if document.key_id is not None:
                    raise VaultError(f"no key for vault {self.path}, which already holds secrets: set {ENV_KEY} "
                                     f"or restore the key file {self.key_file}")
                write_key_file(self.key_file, new_key())
                created = self.key_file
            key = self._matching_key(document, finish_rotation=True)
            for other in document.entries:  # never add to a vault whose other values are damaged
                self._decrypt(document, key, other)
            document.entries[name] = _encrypt(key, name, value)
            document.key_id = key.key_id
            self._write(document)
        return created

    def remove(self, name: str) -> None:
        with self._locked():
            document = self._read()
            if name not in document.entries:
                raise VaultError(f"vault {self.path} has no secret named {name!r}")
            key = self._matching_key(document, finish_rotation=True)
            for each in document.entries:  # only the key's holder may remove; never write a damaged vault
                self._decrypt(document, key, each)
            del document.entries[name]
            self._write(document)

    def rotate_key(self) -> str:
        """Re-encrypt every secret under a new key; returns where the new key is. Nothing changes on error."""
        with self._locked():
            document = self._read()
            current = self._matching_key(document, finish_rotation=True)
            values = {name: self._decrypt(document, current, name) for name in document.entries}
            fresh = new_key()
            rotated = _Document(key_id(fresh), {name: _encrypt(VaultKey(fresh, current.kind, current.where), name, value)
                                                for name, value in values.items()})
            if current.kind == "env":
                # The environment cannot be changed from here: the new key goes to a key file.
                if self.key_file.exists():
                    raise VaultError(f"the key comes from {ENV_KEY}; rotate-key writes the new key to a key file, "
                                     f"but {self.key_file} exists: give --key-file NEWFILE")
                write_key_file(self.key_file, fresh)
                try:
                    self._write(rotated)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(self.key_file)
                    raise
                return (f"key file {self.key_file} (it is used once {ENV_KEY} is unset; or set {ENV_KEY} to its "
                        "content: the old key no longer opens the vault)")
            # Pending key first, then the vault, then the key: an interruption is completed on the next use.
            if current.kind == "keyring":
                _keyring_set(self._keyring_user + "#new", base64.b64encode(fresh).decode("ascii"))
            else:
                write_key_file(self._pending_key_file, fresh)
            try:
                self._write(rotated)
            except BaseException:
                if current.kind == "file":
                    with contextlib.suppress(OSError):
                        os.unlink(self._pending_key_file)
                raise
            self._commit_key(current, VaultKey(fresh, current.kind, current.where))
            return current.where


def check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise VaultError(f"invalid secret name {name!r}: use 1-128 letters, digits, '_', '-' or '.', "
                         "starting with a letter, digit or '_'")


def _encrypt(key: VaultKey, name: str, value: str) -> _Entry:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = random.token_bytes(NONCE_BYTES)
    ciphertext = AESGCM(key.key).encrypt(nonce, value.encode("utf-8"), name.encode("utf-8"))
    return _Entry(nonce, ciphertext, datetime.now(UTC).isoformat(timespec="seconds"))


def _serialize(document: _Document) -> bytes:
    body = {
        "simgate_vault": VERSION,
        "key_id": document.key_id,
        "secrets": {name: {"nonce": base64.b64encode(entry.nonce).decode("ascii"),
                           "ciphertext": base64.b64encode(entry.ciphertext).decode("ascii"),
                           "updated_at": entry.updated_at}
                    for name, entry in sorted(document.entries.items())},
    }
    return (json.dumps(body, indent=2) + "\n").encode("utf-8")


def _parse(raw: bytes, path: Path) -> _Document:
    def corrupt(why: str) -> VaultError:
        return VaultError(f"vault {path} is corrupt: {why}")

    try:
        body = jsontext.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise corrupt(f"not valid JSON ({exc})") from None
    if not isinstance(body, dict) or "simgate_vault" not in body:
        raise corrupt("not a simgate vault file")
    if body["simgate_vault"] != VERSION:
        raise VaultError(f"vault {path} has format version {body['simgate_vault']!r}; this simgate reads {VERSION}")
    key = body.get("key_id")
    if key is not None and not isinstance(key, str):
        raise corrupt("'key_id' must be a string")
    secrets = body.get("secrets")
    if not isinstance(secrets, dict):
        raise corrupt("'secrets' must be an object")
    entries: dict[str, _Entry] = {}
    for name, item in secrets.items():
        if not isinstance(item, dict):
            raise corrupt(f"secret {name!r} is not an object")
        try:
            nonce = base64.b64decode(item["nonce"], validate=True)
            ciphertext = base64.b64decode(item["ciphertext"], validate=True)
        except (KeyError, TypeError, binascii.Error, ValueError):
            raise corrupt(f"secret {name!r} lacks a base64 'nonce' or 'ciphertext'") from None
        if len(nonce) != NONCE_BYTES or len(ciphertext) < 16:
            raise corrupt(f"secret {name!r} has a nonce or ciphertext of the wrong size")
        entries[name] = _Entry(nonce, ciphertext, str(item.get("updated_at", "")))
    if entries and key is None:
        raise corrupt("'key_id' is missing")
    return _Document(key, entries)
