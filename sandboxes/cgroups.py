"""Process and memory caps through cgroup v1, where this machine lets us write them.

RLIMIT_NPROC does not contain a sandbox (it counts per user, and root ignores it); the pids
controller does. A small `sh` prologue moves the sandbox's first process into the groups before
it execs anything, so everything it forks is counted.
"""

from __future__ import annotations

import logging
from pathlib import Path

from simgate.sandboxes.policy import Limits
from simgate.sandboxes.workdir import directory_name

logger = logging.getLogger("simgate.sandbox")

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _group(controller: str, name: str) -> Path | None:
    base = CGROUP_ROOT / controller
    if not (base / "cgroup.procs").exists():
        return None
    group = base / "simgate" / directory_name(name)
    try:
        group.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return group


def cgroup_prefix(name: str, limits: Limits) -> list[str]:
    """`sh -c` prologue joining the server's cgroups, or nothing when no cgroup limit applies."""
    settings: list[tuple[Path, str, str]] = []
    if limits.processes is not None:
        group = _group("pids", name)
        if group is None:
            logger.warning("sandbox %s: the pids cgroup is not writable here; processes are not capped", name)
        else:
            settings.append((group, "pids.max", str(limits.processes)))
    if limits.memory_mb is not None:
        group = _group("memory", name)
        if group is not None:
            settings.append((group, "memory.limit_in_bytes", str(limits.memory_mb * 1024 * 1024)))
    groups = []
    for group, control, value in settings:
        try:
            (group / control).write_text(value)
        except OSError as exc:
            logger.warning("sandbox %s: cannot set %s: %s", name, control, exc)
            continue
        groups.append(group)
    if not groups:
        return []
    joins = " && ".join(f"echo $$ > {group / 'cgroup.procs'}" for group in groups)
    return ["/bin/sh", "-c", f'{joins} && exec "$@"', "simgate-sandbox"]


def cgroups_writable() -> dict[str, bool]:
    return {controller: _group(controller, "check") is not None for controller in ("pids", "memory")}
