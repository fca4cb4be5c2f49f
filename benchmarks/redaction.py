#!/usr/bin/env python
"""Redaction throughput: how fast the redactor scans what the gateway sends and writes.

Secrets: three (like a vault with two tokens and its own key). Inputs, about 1 MB each, without a
secret (the common case, where the whole text is scanned):

  value   a tool result as a JSON value: 8000 text content items (`Redactor.redact`);
  wire    the same as JSON text on the wire (escapes, line breaks: the slower, full pattern);
  stream  console output fed to a `StreamRedactor` in 4 KiB pieces (as an upstream's stderr is);

and the time to build the redactor (on start and when the vault changes).

    .venv/bin/python benchmarks/redaction.py [--repeat 3]

Prints MB/s per input (best of the repeats) and the build time in ms, as JSON.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simgate.gateway.pipeline.redact import Redactor, StreamRedactor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    vault = {"api": f"sk-live/{secrets.token_hex(12)}+Tok=en é&?>~", "gh": "ghp_" + secrets.token_urlsafe(30),
             "vault-key": secrets.token_urlsafe(32)}
    started = time.perf_counter()
    redactor = Redactor(vault)
    build_ms = (time.perf_counter() - started) * 1000
    value = {"content": [{"type": "text", "text": f"{secrets.token_urlsafe(60)} hello wörld\n{secrets.token_hex(20)}"}
                         for _ in range(8000)]}
    wire = json.dumps(value)
    console = "\n".join(f"[12/06/26 06:55:44] INFO     line {n} {secrets.token_urlsafe(40)}   server.py:453"
                        for n in range(12000)) + "\n"

    def stream() -> None:
        pieces = StreamRedactor(redactor, wrapped=True)
        for i in range(0, len(console), 4096):
            pieces.feed(console[i:i + 4096])
        pieces.feed("", final=True)

    runs = {"value": (lambda: redactor.redact(value), len(wire)),
            "wire": (lambda: redactor.redact_text(wire), len(wire)), "stream": (stream, len(console))}
    report: dict[str, float] = {"build_ms": round(build_ms, 1)}
    for name, (run, size) in runs.items():
        best = float("inf")
        for _ in range(args.repeat):
            started = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - started)
        report[f"{name}_MB_per_s"] = round(size / best / 1e6, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
