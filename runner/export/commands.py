"""`simgate export trajectories IN.jsonl --format toucan|openai|sharegpt --out OUT.jsonl|OUT.parquet`."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

from simgate import jsontext
from simgate.errors import UsageError
from simgate.files import atomic_write
from simgate.gateway.cli import command_group
from simgate.runner.export.formats import FORMATS, ExportError


def register(commands: Any) -> None:
    group = command_group(commands, "export", "export recorded data for training")
    export = group.add_parser("trajectories", help="trajectories of `simgate run` in TOUCAN's columns or ShareGPT")
    export.add_argument("trajectories", help="a JSONL file written by `simgate run`")
    export.add_argument("--format", choices=sorted(FORMATS), default="toucan")
    export.add_argument("--out", required=True, help="the file to write: JSONL, or Parquet when it ends in .parquet "
                        "(replaced whole, never half-written)")
    export.add_argument("--only-passed", action="store_true", help="only trajectories whose checks passed")
    export.add_argument("--card", action="store_true", help="also write a dataset card (README.md, with score "
                        "histograms in card/) beside the file")
    export.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    convert = FORMATS[args.format]
    source = Path(args.trajectories)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{source} is not UTF-8 text (byte {exc.start + 1}): not a file of `simgate run`") from None
    rows: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    skipped = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            trajectory = jsontext.loads(line)
            if not isinstance(trajectory, dict):
                raise ExportError("not a JSON object")
            if args.only_passed and not (trajectory.get("checks") or {}).get("passed"):
                skipped += 1
                continue
            rows.append(convert(trajectory))
            kept.append(trajectory)
        except (json.JSONDecodeError, ExportError) as exc:
            raise UsageError(f"{source}:{number}: {exc}") from None
    out = Path(args.out)
    write_rows(out, rows)
    if args.card:
        from simgate.runner.export.card import card_facts, write_card

        card = write_card(out.parent, card_facts(kept), out.name, args.format)
        print(f"wrote the dataset card {card}")
    print(f"wrote {len(rows)} {args.format} rows to {args.out}" + (f" ({skipped} without passed checks left out)"
                                                                    if skipped else ""))
    return 0


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """JSONL, or Parquet for a `.parquet` path (the layout `datasets` loads); whole or not at all."""
    if path.suffix == ".parquet":
        # Imported here: every `simgate` command (serve too) builds this module's parser.
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buffer)
        atomic_write(path, buffer.getvalue())
    else:
        atomic_write(path, [json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows])
