"""`simgate export simulator-sft --store DIR --out FILE.jsonl`: recorded calls as fine-tuning pairs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from simgate.gateway.cache.errors import STORE_ERRORS, describe_store_error
from simgate.gateway.cli import command_group, guarded


def register(commands: Any) -> None:
    group = command_group(commands, "export", "export recorded data for training")
    sft = group.add_parser("simulator-sft", help="recorded calls as chat-format training pairs for a simulator model")
    source = sft.add_mutually_exclusive_group()
    source.add_argument("--store", metavar="DIR", help="the recording store (default .simgate/cache)")
    source.add_argument("--config", metavar="FILE", help="a gateway config: its store and server descriptions")
    sft.add_argument("--out", metavar="FILE", required=True, help="the JSONL file to write (replaced atomically)")
    sft.add_argument("--server", help="only this server's recordings")
    sft.add_argument("--examples", type=int, default=0,
                     help="also show the k most similar other recordings of the tool, as at inference (default 0)")
    sft.add_argument("--history", action="store_true", help="also show the recorded session's earlier calls")
    sft.add_argument("--prompt", default=None, help="prompt template version (default: the latest)")
    sft.add_argument("--max-answer-chars", type=int, default=20000, help="leave out longer recorded answers")
    sft.set_defaults(handler=guarded(_sft, *STORE_ERRORS, prefix="simgate export simulator-sft",
                                     describe=describe_store_error))


def _sft(args: argparse.Namespace) -> int:
    from simgate.gateway.export.sft import SftOptions, export_sft
    from simgate.gateway.fidelity.source import FidelityInputError, load_world
    from simgate.simulators.prompts import LATEST, VERSIONS

    if args.prompt is not None and args.prompt not in VERSIONS:
        raise FidelityInputError(f"unknown prompt version {args.prompt!r} (known: {', '.join(VERSIONS)})")
    if args.examples < 0:
        raise FidelityInputError("--examples must be 0 or more")
    out = Path(args.out)
    if out.is_dir():
        raise FidelityInputError(f"{out} is a directory; give a file name")
    if not out.parent.is_dir():
        raise FidelityInputError(f"{out.parent} does not exist")
    descriptions: dict[str, str | None] = {}
    store = Path(args.store or ".simgate/cache")
    recordings = None
    if args.config:
        from simgate.gateway.cache.backends import shared_store
        from simgate.gateway.config.loader import load_config

        config = load_config(args.config)
        store = Path(config.gateway.cache_path)
        descriptions = {name: server.description for name, server in config.servers.items()}
        recordings = shared_store(config.gateway)  # a Redis store; None for diskcache (read at `store`)
    try:
        world = load_world(store, args.server, store=recordings)
    finally:
        if recordings is not None:
            recordings.close()
    summary = export_sft(world, out, SftOptions(prompt=args.prompt or LATEST, examples=args.examples,
                                                history=args.history, max_answer_chars=args.max_answer_chars),
                         descriptions)
    skipped = f" ({summary.skipped_long} longer than {args.max_answer_chars} characters left out)" \
        if summary.skipped_long else ""
    print(f"wrote {summary.written} training pair(s) to {out}{skipped}")
    return 0
