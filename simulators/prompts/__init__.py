"""Versioned prompt templates of the LLM simulators. A template never changes once released: a new
wording is a new module (`v2`, ...), so recorded provenance and fine-tuning data keep their meaning."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

VERSIONS = ("v1",)
LATEST = "v1"


def load(version: str) -> ModuleType:
    if version not in VERSIONS:
        raise ValueError(f"unknown simulator prompt version {version!r} (known: {', '.join(VERSIONS)})")
    return import_module(f"simgate.simulators.prompts.{version}")
