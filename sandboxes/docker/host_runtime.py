"""What a server needs from the host to run in a container: its runtime and that runtime's files.

Servers are installed on the host (a venv per Python server, an `npm install --prefix` per Node
server) and their tool directories are mounted read-only at the same paths, so the absolute paths in
shebangs and `pyvenv.cfg` keep working. The interpreter they point at, and the shared libraries it
loads (found with `ldd`), are copied into the image at the same paths as on the host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from simgate.sandboxes.launch import SandboxUnavailable

RuntimeKind = Literal["python", "node"]

_PYTHON_NAME = re.compile(r"^python3(\.\d+)?$")
# Parts of the standard library no server needs in a container (GUI, tests, the bundled pip wheels);
# leaving them out keeps the image and its build small.
_STDLIB_SKIP = {"site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip",
                "lib2to3"}
_DYNLOAD_SKIP = ("_tkinter",)
# What the base image carries: a shell (some npm bins are shell scripts) and `env` (`#!/usr/bin/env node`).
BASE_TOOLS = ("/bin/sh", "/usr/bin/env")
# The system libraries a manylinux wheel may link against (PEP 599/600, GUI ones left out): the
# extension modules in a server's venv need them even when the interpreter itself does not.
MANYLINUX_LIBRARIES = ("libgcc_s.so.1", "libstdc++.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libc.so.6",
                       "libnsl.so.1", "libutil.so.1", "libpthread.so.0", "libresolv.so.2", "libz.so.1")
_PROBE = (
    "import json, os, site, sys, sysconfig; "
    "print(json.dumps({'executable': os.path.realpath(sys.executable), 'stdlib': sysconfig.get_path('stdlib'), "
    "'site': sorted({*site.getsitepackages(), sysconfig.get_path('purelib'), sysconfig.get_path('platlib')}), "
    "'platstdlib': sysconfig.get_path('platstdlib'), 'libdir': sysconfig.get_config_var('LIBDIR'), "
    "'ldlibrary': sysconfig.get_config_var('LDLIBRARY'), 'shared': sysconfig.get_config_var('Py_ENABLE_SHARED'), "
    "'version': '%d.%d.%d' % sys.version_info[:3]}))"
)


class Runtime(BaseModel):
    """The interpreter a server runs on, as found on the host (`interpreter` is a real path)."""

    kind: RuntimeKind
    interpreter: str


class Entry(BaseModel):
    """One file system entry to put into an image at `path` (absolute, as on the host)."""

    path: str
    type: Literal["file", "dir", "symlink"]
    target: str = ""  # a symlink's target


def detect_runtime(executable: str, search_path: str | None) -> Runtime | None:
    """The Python or Node interpreter that `executable` runs on, or None if it is neither."""
    candidate = Path(executable)
    if not candidate.is_absolute():
        found = shutil.which(executable, path=search_path)
        if found is None:
            return None
        candidate = Path(found)
    for _ in range(4):  # a script's shebang may name `env`, or another script
        real = candidate.resolve()
        kind = _kind_of(real.name)
        if kind is not None:
            return Runtime(kind=kind, interpreter=str(real))
        interpreter = _shebang(real)
        if not interpreter:
            return None
        if Path(interpreter[0]).name == "env":
            words = [word for word in interpreter[1:] if not word.startswith("-")]
            found = shutil.which(words[0], path=search_path) if words else None
            if found is None:
                return None
            candidate = Path(found)
        else:
            candidate = Path(interpreter[0])
    return None


def _kind_of(name: str) -> RuntimeKind | None:
    if _PYTHON_NAME.match(name):
        return "python"
    if name in ("node", "nodejs"):
        return "node"
    return None


def _shebang(path: Path) -> list[str]:
    try:
        with open(path, "rb") as handle:
            first = handle.readline(512)
    except OSError:
        return []
    if not first.startswith(b"#!"):
        return []
    return first[2:].decode(errors="replace").split()


class FileSet:
    """Entries for an image, with every symlink met on the way to a file kept as a symlink."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def add(self, path: str | Path) -> None:
        """Add `path` (a file or a symlink chain ending in one) and the directories leading to it."""
        self._add(Path(os.path.abspath(path)), depth=0)

    def add_tree(self, root: str | Path, skip: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        root = Path(root)
        self.add_dir(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in skip)
            for name in [*dirnames, *sorted(filenames)]:
                path = Path(dirpath) / name
                if path.is_symlink():
                    self.entries[str(path)] = Entry(path=str(path), type="symlink", target=os.readlink(path))
                elif path.is_dir():
                    self.entries[str(path)] = Entry(path=str(path), type="dir")
                elif path.is_file():
                    self.entries[str(path)] = Entry(path=str(path), type="file")

    def add_dir(self, path: Path) -> None:
        self._parents(path)
        self.entries.setdefault(str(path), Entry(path=str(path), type="dir"))

    def _add(self, path: Path, depth: int) -> None:
        if depth > 40:
            raise SandboxUnavailable(f"docker: too many symlinks resolving {path}")
        # Walk the components: a symlinked directory on the way is kept as a symlink too.
        current = Path("/")
        for index, part in enumerate(path.parts[1:], start=1):
            current = current / part
            if current.is_symlink():
                target = os.readlink(current)
                self._parents(current)
                self.entries[str(current)] = Entry(path=str(current), type="symlink", target=target)
                rest = Path(*path.parts[index + 1:]) if index + 1 < len(path.parts) else None
                resolved = Path(os.path.normpath(current.parent / target))
                self._add(resolved / rest if rest else resolved, depth + 1)
                return
        if path.is_dir():
            self.add_dir(path)
        elif path.exists():
            self._parents(path)
            self.entries[str(path)] = Entry(path=str(path), type="file")

    def _parents(self, path: Path) -> None:
        for parent in reversed(path.parents):
            if str(parent) != "/" and str(parent) not in self.entries:
                self.entries[str(parent)] = Entry(path=str(parent), type="dir")

    def fingerprint(self) -> list[tuple[str, str, int, int, int, str]]:
        """What identifies the content cheaply: path, type, size, mtime and mode (no file is read)."""
        out: list[tuple[str, str, int, int, int, str]] = []
        for path, entry in sorted(self.entries.items()):
            info = os.lstat(path)
            out.append((path, entry.type, info.st_size if entry.type == "file" else 0,
                        info.st_mtime_ns if entry.type == "file" else 0, stat.S_IMODE(info.st_mode), entry.target))
        return out


def shared_libraries(binaries: list[str]) -> list[str]:
    """The shared libraries (and the dynamic loader) the given ELF files load, as `ldd` resolves them."""
    ldd = shutil.which("ldd")
    if ldd is None:
        raise SandboxUnavailable("docker: `ldd` (libc-bin) is needed to find a runtime's shared libraries")
    found: set[str] = set()
    for chunk in range(0, len(binaries), 200):
        done = subprocess.run([ldd, *binaries[chunk:chunk + 200]], capture_output=True, text=True, timeout=120, check=False)
        for line in done.stdout.splitlines():
            line = line.strip()
            if "=>" in line:
                target = line.split("=>", 1)[1].split("(")[0].strip()
            else:
                target = line.split("(")[0].strip()
            if target.startswith("/"):
                found.add(target)
    return sorted(found)


def system_libraries(names: tuple[str, ...], beside: str) -> list[str]:
    """Where the dynamic loader finds these libraries on this host (`ldconfig -p`), preferring the
    directory of `beside` (a library of the runtime: the same architecture); missing ones are skipped."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        done = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return []
    found: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, rest = line.strip().partition(" ")
        if name in names and "=>" in rest:
            path = rest.split("=>", 1)[1].strip()
            if name not in found or Path(path).parent == Path(beside).parent:
                found[name] = path
    return list(found.values())


def base_files() -> FileSet:
    files = FileSet()
    for tool in BASE_TOOLS:
        if not Path(tool).exists():
            raise SandboxUnavailable(f"docker: {tool} is missing on this host; the base image needs it")
        files.add(tool)
    for library in shared_libraries([str(Path(tool).resolve()) for tool in BASE_TOOLS]):
        files.add(library)
    return files


def python_files(interpreter: str) -> FileSet:
    """The interpreter, its standard library (without tests and GUI) and the libraries they load."""
    try:
        done = subprocess.run([interpreter, "-I", "-S", "-c", _PROBE], capture_output=True, text=True, timeout=60, check=False)
        info = json.loads(done.stdout)
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        raise SandboxUnavailable(f"docker: cannot inspect the Python at {interpreter}: {exc}") from None
    files = FileSet()
    executable = Path(info["executable"])
    files.add(executable)
    for sibling in ("python3", "python"):  # the names venvs and shebangs use for it
        if (executable.parent / sibling).exists():
            files.add(executable.parent / sibling)
    # config-3.X-<arch>/ holds the static libpython and build files: tens of MB no server runs.
    stdlib_skip = _STDLIB_SKIP | {p.name for p in Path(info["stdlib"]).glob("config-*")}
    for tree in {info["stdlib"], info["platstdlib"]}:
        files.add_tree(tree, skip=stdlib_skip)
    # The interpreter's own package directories, as it names them (site-packages, or dist-packages on
    # Debian and Ubuntu, possibly outside the standard library): present but empty, since servers bring
    # their packages in their venvs. One that does not exist on the host is not made up.
    for directory in info["site"]:
        if Path(directory).is_dir():
            files.add_dir(Path(directory))
    elf = [str(executable)]
    if info.get("shared") and info.get("libdir") and info.get("ldlibrary"):
        library = Path(info["libdir"]) / info["ldlibrary"]
        for name in sorted(Path(info["libdir"]).glob(info["ldlibrary"] + "*")):
            files.add(name)
        elf.append(str(library))
    for tree in {info["stdlib"], info["platstdlib"]}:
        dynload = Path(tree) / "lib-dynload"
        if dynload.is_dir():
            elf += [str(p) for p in sorted(dynload.glob("*.so")) if not p.name.startswith(_DYNLOAD_SKIP)]
    for skipped in [p for p in list(files.entries) if Path(p).name.startswith(_DYNLOAD_SKIP)]:
        del files.entries[skipped]
    libraries = shared_libraries(elf)
    libc = next((lib for lib in libraries if Path(lib).name.startswith("libc.so")), libraries[0] if libraries else "/")
    manylinux = system_libraries(MANYLINUX_LIBRARIES, libc)
    for library in {*manylinux, *shared_libraries(elf + manylinux)}:
        files.add(library)
    return files


def node_files(interpreter: str) -> FileSet:
    """The node binary and the libraries it loads (npm is not needed: servers are installed already)."""
    files = FileSet()
    files.add(interpreter)
    for library in shared_libraries([interpreter]):
        files.add(library)
    return files


def forwarder_python() -> str:
    """The Python that runs the egress forwarder in a container whose server is not Python (the
    gateway's own base interpreter; the Node image carries it for that)."""
    return os.path.realpath(sys.executable)
