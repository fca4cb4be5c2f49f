"""The vault: secrets encrypted at rest (AES-GCM), referenced from a config as `vault:NAME`.

`store` holds the file format and its key; `refs` finds and substitutes references in a server's
`env` and `headers`; `runtime` resolves them for a running gateway and notices when they change;
`commands` is `simgate vault set|list|rm|rotate-key`.
"""

from simgate.gateway.vault.store import Vault, VaultError

__all__ = ["Vault", "VaultError"]
