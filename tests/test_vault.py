"""The vault: AES-GCM at rest, keys from the environment, a 0600 key file or the OS keyring, the
`simgate vault` command (values from stdin or a hidden prompt, never argv), atomic writes, clear
errors for a wrong key or a damaged file that change nothing."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from harness import REPO_ROOT

from simgate.gateway.vault.store import ENV_KEY, Vault, VaultError, key_id

VALUE = "s3cr3t-value/with+chars= é"
PEM = "-----BEGIN KEY-----\nAAAA\nBBBB\n-----END KEY-----"


def cli(workdir: Path, *args: str, stdin: str | None = "", env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != ENV_KEY}
    return subprocess.run([sys.executable, "-m", "simgate", "vault", *args], check=False, cwd=workdir, input=stdin,
                          text=True, capture_output=True, timeout=60,
                          env={**base, "PYTHONPATH": str(REPO_ROOT), **(env or {})})


def assert_clean_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("simgate vault ") and done.stderr.count("\n") == 1, done.stderr  # simgate vault CMD: ...
    for needle in needles:
        assert needle in done.stderr, (needle, done.stderr)


def new_env_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------------------------- the CLI


def test_set_list_rm(tmp_path: Path) -> None:
    done = cli(tmp_path, "set", "github", stdin=VALUE + "\n")
    assert done.returncode == 0, done.stderr
    assert "created a new vault key in .simgate/vault.key" in done.stderr
    assert cli(tmp_path, "set", "pem", stdin=PEM + "\n").returncode == 0
    listed = cli(tmp_path, "list")
    assert listed.returncode == 0 and listed.stdout.split() == ["github", "pem"]
    vault_file, key_file = tmp_path / ".simgate" / "vault.json", tmp_path / ".simgate" / "vault.key"
    assert mode(vault_file) == 0o600 and mode(key_file) == 0o600 and mode(vault_file.parent) == 0o700
    raw = vault_file.read_bytes()
    for form in (VALUE, "s3cr3t", base64.b64encode(VALUE.encode()).decode(), "AAAA\n"):
        assert form.encode() not in raw
    assert set(json.loads(raw)["secrets"]) == {"github", "pem"}
    # The trailing newline of `echo VALUE |` is not part of the value; inner newlines are.
    vault = Vault(vault_file)
    assert vault.get("github") == VALUE and vault.get("pem") == PEM
    # Setting again replaces the value.
    assert cli(tmp_path, "set", "github", stdin="second\n").returncode == 0
    assert Vault(vault_file).get("github") == "second"
    assert cli(tmp_path, "rm", "pem").returncode == 0
    assert cli(tmp_path, "list").stdout.split() == ["github"]
    assert_clean_error(cli(tmp_path, "rm", "pem"), "no secret named 'pem'")


def test_the_value_is_never_taken_from_argv(tmp_path: Path) -> None:
    done = cli(tmp_path, "set", "github", VALUE)
    assert done.returncode == 2 and "unrecognized arguments" in done.stderr
    assert not (tmp_path / ".simgate").exists()
    # The `set` parser has no argument a value could go to.
    import argparse

    from simgate.gateway.cli import build_parser

    parser: argparse.ArgumentParser = build_parser()
    for name in ("vault", "set"):
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    positionals = [action.dest for action in parser._actions if not action.option_strings]
    options = sorted(option for action in parser._actions for option in action.option_strings)
    assert positionals == ["name"]
    assert options == sorted(["--config", "--key-file", "--vault", "-h", "--help"])


def test_empty_value_and_bad_name_are_refused(tmp_path: Path) -> None:
    assert_clean_error(cli(tmp_path, "set", "github", stdin="\n"), "empty value")
    assert_clean_error(cli(tmp_path, "set", "bad name", stdin="x\n"), "invalid secret name")
    assert not (tmp_path / ".simgate" / "vault.json").exists()


def test_a_terminal_gets_a_hidden_prompt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from simgate.gateway.cli import main

    class Terminal:
        def isatty(self) -> bool:
            return True

        def read(self) -> str:
            raise AssertionError("a terminal is not read in clear")

    answers = iter([VALUE, VALUE, "one", "two"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", fake_getpass)
    monkeypatch.delenv(ENV_KEY, raising=False)
    vault_file = tmp_path / "v.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["vault", "set", "github", "--vault", str(vault_file)])
    assert exit_info.value.code == 0 and Vault(vault_file).get("github") == VALUE
    assert prompts == ["value of github (hidden): ", "again: "]
    with pytest.raises(SystemExit) as exit_info:
        main(["vault", "set", "other", "--vault", str(vault_file)])  # the two entries differ
    assert exit_info.value.code == 2 and Vault(vault_file).names() == ["github"]


def test_vault_and_key_file_options_and_config(tmp_path: Path) -> None:
    vault_file, key_file = tmp_path / "elsewhere" / "secrets.json", tmp_path / "keys" / "k"
    done = cli(tmp_path, "set", "a", "--vault", str(vault_file), "--key-file", str(key_file), stdin="v1\n")
    assert done.returncode == 0, done.stderr
    assert vault_file.exists() and key_file.exists() and not (tmp_path / ".simgate").exists()
    assert cli(tmp_path, "list", "--vault", str(vault_file), "--key-file", str(key_file)).stdout.split() == ["a"]
    # Without the key file option the default (beside the vault) is looked for, and there is none.
    assert_clean_error(cli(tmp_path, "list", "--vault", str(vault_file)), "no key for vault")
    config = tmp_path / "gw.json"
    config.write_text(json.dumps({"gateway": {"vault_path": str(vault_file), "vault_key_file": str(key_file)},
                                  "mcpServers": {}}))
    assert cli(tmp_path, "list", "--config", str(config)).stdout.split() == ["a"]


def test_an_environment_key_is_used_first_and_no_key_file_is_made(tmp_path: Path) -> None:
    env = {ENV_KEY: new_env_key()}
    assert cli(tmp_path, "set", "a", stdin="v\n", env=env).returncode == 0
    assert not (tmp_path / ".simgate" / "vault.key").exists()
    assert cli(tmp_path, "list", env=env).stdout.split() == ["a"]
    assert_clean_error(cli(tmp_path, "list"), "no key for vault", ENV_KEY)
    assert_clean_error(cli(tmp_path, "list", env={ENV_KEY: "not base64!"}), ENV_KEY, "not a base64 key")
    assert_clean_error(cli(tmp_path, "list", env={ENV_KEY: base64.b64encode(b"short").decode()}),
                       "holds 5 bytes")


# ---------------------------------------------------------------------------------------------- wrong key, damage


def test_a_wrong_key_is_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    assert cli(tmp_path, "set", "a", stdin=VALUE + "\n").returncode == 0
    vault_file = tmp_path / ".simgate" / "vault.json"
    before = vault_file.read_bytes()
    wrong = {ENV_KEY: new_env_key()}
    for args in (("list",), ("set", "b"), ("rm", "a"), ("rotate-key",)):
        done = cli(tmp_path, *args, stdin="new value\n", env=wrong)
        assert_clean_error(done, "wrong key for vault", "environment variable SIMGATE_VAULT_KEY")
        assert VALUE not in done.stderr + done.stdout
        assert vault_file.read_bytes() == before, args
    # A key file holding another key: the same.
    key_file = tmp_path / ".simgate" / "vault.key"
    good_key = key_file.read_bytes()
    key_file.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    assert_clean_error(cli(tmp_path, "list"), "wrong key", "key file .simgate/vault.key")
    key_file.write_bytes(good_key)
    assert cli(tmp_path, "list").stdout.split() == ["a"]


@pytest.mark.parametrize("damage", ["truncated", "not json", "tampered ciphertext", "swapped names", "bad nonce",
                                    "future version", "no key id"])
def test_a_damaged_vault_is_a_clear_error_and_changes_nothing(tmp_path: Path, damage: str) -> None:
    assert cli(tmp_path, "set", "a", stdin="value-a\n").returncode == 0
    assert cli(tmp_path, "set", "b", stdin="value-b\n").returncode == 0
    vault_file = tmp_path / ".simgate" / "vault.json"
    document = json.loads(vault_file.read_text())
    if damage == "truncated":
        vault_file.write_bytes(vault_file.read_bytes()[:60])
    elif damage == "not json":
        vault_file.write_text("hello")
    elif damage == "tampered ciphertext":
        raw = bytearray(base64.b64decode(document["secrets"]["a"]["ciphertext"]))
        raw[0] ^= 1
        document["secrets"]["a"]["ciphertext"] = base64.b64encode(bytes(raw)).decode()
        vault_file.write_text(json.dumps(document))
    elif damage == "swapped names":  # the name is authenticated: a value cannot be moved to another name
        document["secrets"]["a"], document["secrets"]["b"] = document["secrets"]["b"], document["secrets"]["a"]
        vault_file.write_text(json.dumps(document))
    elif damage == "bad nonce":
        document["secrets"]["a"]["nonce"] = "AAAA"
        vault_file.write_text(json.dumps(document))
    elif damage == "future version":
        document["simgate_vault"] = 99
        vault_file.write_text(json.dumps(document))
    elif damage == "no key id":
        del document["key_id"]
        vault_file.write_text(json.dumps(document))
    before = vault_file.read_bytes()
    for args in (("list",), ("set", "c"), ("rm", "b"), ("rotate-key",)):
        done = cli(tmp_path, *args, stdin="value-c\n")
        assert_clean_error(done, str(Path(".simgate") / "vault.json"))
        assert "value-" not in done.stderr
        assert vault_file.read_bytes() == before, (damage, args)
    assert (tmp_path / ".simgate" / "vault.key").exists()


@pytest.mark.parametrize("bits", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_a_key_file_others_can_access_is_refused(tmp_path: Path, bits: int) -> None:
    assert cli(tmp_path, "set", "a", stdin="v\n").returncode == 0
    key_file = tmp_path / ".simgate" / "vault.key"
    key_file.chmod(bits)
    for args in (("list",), ("set", "b"), ("rotate-key",)):
        assert_clean_error(cli(tmp_path, *args, stdin="w\n"), "key file .simgate/vault.key",
                           f"mode {bits:04o}", "chmod 600")
    assert Vault(tmp_path / ".simgate" / "vault.json").path.exists()
    key_file.chmod(0o600)
    assert cli(tmp_path, "list").stdout.split() == ["a"]


# ---------------------------------------------------------------------------------------------- rotation


def test_rotate_key(tmp_path: Path) -> None:
    for name, value in (("a", VALUE), ("b", PEM)):
        assert cli(tmp_path, "set", name, stdin=value + "\n").returncode == 0
    vault_file, key_file = tmp_path / ".simgate" / "vault.json", tmp_path / ".simgate" / "vault.key"
    old_key, old_doc = key_file.read_text(), json.loads(vault_file.read_text())
    done = cli(tmp_path, "rotate-key")
    assert done.returncode == 0, done.stderr
    assert "new key is in key file .simgate/vault.key" in done.stdout
    new_doc = json.loads(vault_file.read_text())
    assert key_file.read_text() != old_key and mode(key_file) == 0o600 and mode(vault_file) == 0o600
    assert new_doc["key_id"] != old_doc["key_id"]
    for name in ("a", "b"):
        assert new_doc["secrets"][name]["ciphertext"] != old_doc["secrets"][name]["ciphertext"]
    assert Vault(vault_file).read_all() == {"a": VALUE, "b": PEM}
    assert_clean_error(cli(tmp_path, "list", env={ENV_KEY: old_key.strip()}), "wrong key")
    assert not list(vault_file.parent.glob("*.tmp")) and not (vault_file.parent / "vault.key.new").exists()


def test_rotate_key_from_the_environment_writes_a_key_file(tmp_path: Path) -> None:
    env = {ENV_KEY: new_env_key()}
    assert cli(tmp_path, "set", "a", stdin="v\n", env=env).returncode == 0
    done = cli(tmp_path, "rotate-key", env=env)
    assert done.returncode == 0, done.stderr
    assert "key file .simgate/vault.key" in done.stdout and ENV_KEY in done.stdout
    assert_clean_error(cli(tmp_path, "list", env=env), "wrong key")  # the old key no longer opens it
    assert cli(tmp_path, "list").stdout.split() == ["a"]  # the new key file does
    # A second rotation with the (new) environment key would need somewhere else to put its key.
    new_env = {ENV_KEY: (tmp_path / ".simgate" / "vault.key").read_text().strip()}
    assert_clean_error(cli(tmp_path, "rotate-key", env=new_env), "--key-file")


def test_an_interrupted_rotation_is_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEY, raising=False)
    vault = Vault(tmp_path / "vault.json")
    vault.set("a", VALUE)
    old_key = vault.key().key

    def crash(*args: Any) -> None:
        raise KeyboardInterrupt  # the process dies after the vault was rewritten, before the key was

    monkeypatch.setattr(Vault, "_commit_key", crash)
    with pytest.raises(KeyboardInterrupt):
        vault.rotate_key()
    monkeypatch.undo()
    monkeypatch.delenv(ENV_KEY, raising=False)
    document = json.loads((tmp_path / "vault.json").read_text())
    assert document["key_id"] != key_id(old_key) and (tmp_path / "vault.key.new").exists()
    reopened = Vault(tmp_path / "vault.json")
    assert reopened.read_all() == {"a": VALUE}  # read with the pending key
    reopened.set("b", "v")  # a write completes the rotation
    assert not (tmp_path / "vault.key.new").exists() and reopened.key().key_id == document["key_id"]
    assert reopened.read_all() == {"a": VALUE, "b": "v"}


# ---------------------------------------------------------------------------------------------- the file


def test_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEY, raising=False)
    vault = Vault(tmp_path / "vault.json")
    vault.set("a", VALUE)
    before = (tmp_path / "vault.json").read_bytes()

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    for action in (lambda: vault.set("b", "x"), lambda: vault.remove("a"), vault.rotate_key):
        with pytest.raises(OSError):
            action()
        assert (tmp_path / "vault.json").read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["vault.json", "vault.json.lock", "vault.key"]
    monkeypatch.undo()
    monkeypatch.delenv(ENV_KEY, raising=False)
    assert Vault(tmp_path / "vault.json").read_all() == {"a": VALUE}


def test_concurrent_sets_lose_nothing(tmp_path: Path) -> None:
    assert cli(tmp_path, "set", "first", stdin="v\n").returncode == 0
    base = {k: v for k, v in os.environ.items() if k != ENV_KEY}
    processes = [subprocess.Popen([sys.executable, "-m", "simgate", "vault", "set", f"name{i}"], cwd=tmp_path,
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  env={**base, "PYTHONPATH": str(REPO_ROOT)}) for i in range(8)]
    for i, process in enumerate(processes):
        process.communicate(f"value-{i}\n".encode(), timeout=60)
        assert process.returncode == 0
    values = Vault(tmp_path / ".simgate" / "vault.json", environ={}).read_all()
    assert values == {"first": "v", **{f"name{i}": f"value-{i}" for i in range(8)}}


def test_each_value_has_its_own_nonce(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault.json", environ={})
    vault.set("a", "same")
    vault.set("b", "same")
    document = json.loads((tmp_path / "vault.json").read_text())["secrets"]
    assert document["a"]["nonce"] != document["b"]["nonce"]
    assert document["a"]["ciphertext"] != document["b"]["ciphertext"]
    assert len(base64.b64decode(document["a"]["nonce"])) == 12


def test_the_os_keyring_is_used_when_there_is_no_other_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types as pytypes

    stored: dict[tuple[str, str], str] = {}
    keyring = pytypes.ModuleType("keyring")
    keyring.get_password = lambda service, user: stored.get((service, user))  # type: ignore[attr-defined]
    keyring.set_password = lambda service, user, value: stored.__setitem__((service, user), value)  # type: ignore[attr-defined]
    keyring.delete_password = lambda service, user: stored.pop((service, user), None)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyring", keyring)
    vault_file = tmp_path / "vault.json"
    key = os.urandom(32)
    stored[("simgate-vault", str(vault_file.resolve()))] = base64.b64encode(key).decode()
    vault = Vault(vault_file, environ={})
    assert vault.set("a", VALUE) is None  # no key file is made: the keyring has one
    assert not (tmp_path / "vault.key").exists() and vault.key().kind == "keyring"
    assert "OS keyring" in vault.rotate_key()
    assert stored[("simgate-vault", str(vault_file.resolve()))] != base64.b64encode(key).decode()
    assert Vault(vault_file, environ={}).read_all() == {"a": VALUE}
    # An environment key comes first.
    with pytest.raises(VaultError, match="wrong key"):
        Vault(vault_file, environ={ENV_KEY: new_env_key()}).read_all()
