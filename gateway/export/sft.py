"""Recorded calls as chat-format fine-tuning pairs for an expert simulator model (as MirrorAPI trained on).

Each line is `{"messages": [system, user, assistant], "metadata": {...}}`: the system and user turns
are exactly what the `openai` simulator sends at inference time for that call (the same prompt
builder, `simulators/prompts`), and the assistant turn is the real recorded answer in the answer
format the model must produce. With `examples`/`history`, the few-shot and session turns the
simulator would show are included the same way. Recordings are written redacted (they were recorded
redacted; this redacts again with the default vault's secrets, like cassette export).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simgate.gateway.cache.records import Recording
from simgate.gateway.fidelity.source import RecordedWorld, example_of
from simgate.simulators.base import SimulationRequest
from simgate.simulators.prompts import LATEST
from simgate.simulators.prompts import load as load_prompt


@dataclass
class SftOptions:
    prompt: str = LATEST
    examples: int = 0
    history: bool = False
    max_example_chars: int = 4000  # as OpenAIConfig.max_example_chars: few-shot answers clipped like at inference
    max_answer_chars: int = 20000  # longer recorded answers are left out, not cut (a cut target teaches cutting)


@dataclass
class SftSummary:
    written: int
    skipped_long: int


def _dumps(value: Any) -> str:
    # The prompt's own compact JSON (simulators/prompts/v1.py); tests check the two stay byte-identical.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def pair(world: RecordedWorld, recording: Recording, options: SftOptions,
         descriptions: dict[str, str | None]) -> dict[str, Any] | None:
    prompt = load_prompt(options.prompt)
    spec = world.spec(recording)
    request = SimulationRequest(server=recording.server, server_description=descriptions.get(recording.server),
                                tool=spec, arguments=recording.arguments,
                                examples=world.examples(recording, options.examples) if options.examples else [],
                                history=world.history(recording) if options.history else [])
    answer = prompt.answer_of(example_of(recording), with_structured=spec.output_schema is not None,
                              max_chars=options.max_answer_chars + 1)
    if len(answer.get("content_text", "")) > options.max_answer_chars:
        return None
    messages = [*prompt.build_messages(request, max_chars=options.max_example_chars),
                {"role": "assistant", "content": _dumps(answer)}]
    return {"messages": messages,
            "metadata": {"server": recording.server, "tool": recording.tool, "key": recording.key,
                         "prompt_version": prompt.VERSION, "is_error": recording.is_error,
                         "recorded_at": recording.recorded_at}}


def sft_lines(world: RecordedWorld, options: SftOptions, descriptions: dict[str, str | None],
              summary: SftSummary) -> Iterator[bytes]:
    for recording in world.recordings:
        item = pair(world, recording, options, descriptions)
        if item is None:
            summary.skipped_long += 1
            continue
        summary.written += 1
        yield (json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8")


def export_sft(world: RecordedWorld, out: Path, options: SftOptions,
               descriptions: dict[str, str | None] | None = None) -> SftSummary:
    """Write the JSONL atomically (a temp file, then rename: never half a file)."""
    from simgate.files import atomic_write
    from simgate.gateway.pipeline.redact import redact_recording
    from simgate.gateway.vault.gateway_secrets import default_redactor

    redactor = default_redactor()
    if redactor is not None:
        world.recordings = [redact_recording(redactor, r) for r in world.recordings]
        world.by_tool = {k: [redact_recording(redactor, r) for r in v] for k, v in world.by_tool.items()}
    summary = SftSummary(written=0, skipped_long=0)
    atomic_write(out, sft_lines(world, options, descriptions or {}, summary))
    return summary
