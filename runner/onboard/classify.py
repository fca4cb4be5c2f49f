"""From what was observed to what it means: each tool's class and the settings to serve it with.

Plain functions over `ProbeCall`s (no I/O), so each rule can be tested on made-up observations and
on real ones alike.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from simgate.results import text_of
from simgate.runner.onboard.observations import (
    CallOutcome,
    ProbeCall,
    ProposedSettings,
    ToolClassification,
    ToolStatus,
)
from simgate.simulators.fidelity.call_metrics import leaf_values

# Error text that means a credential is missing or refused.
_CREDENTIAL_TEXT = re.compile(
    r"api[ _-]?key|access[ _-]?token|auth[ _-]?token|\btoken\b.*(missing|required|invalid|not set)|credential|"
    r"unauthori[sz]ed|\b401\b|forbidden|\b403\b|authenticat|not authenticated|permission denied for api|"
    r"environment variable|env var|must be set|is not set|missing .*(key|token|secret)",
    re.IGNORECASE)
# Names of environment variables that carry secrets, as error texts and docs write them.
_ENV_NAME = re.compile(r"\b([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_(?:API_KEY|KEY|TOKEN|SECRET|PASSWORD|PAT|ID|URL))\b")
_ANY_ENV_NAME = re.compile(r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]+)\b")
# Error text that means the network was needed (what offline and behind a closed proxy looks like).
_NETWORK_TEXT = re.compile(
    r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|getaddrinfo|name or service not known|"
    r"temporary failure in name resolution|network is unreachable|no route to host|failed to resolve|"
    r"fetch failed|connection refused|connecterror|connection error|could not connect|"
    r"failed to establish a new connection|max retries exceeded|proxyerror|tunnel connection failed|"
    r"403 forbidden.*proxy|not in the allowlist|nodename nor servname|socket hang up|timed out while connecting",
    re.IGNORECASE)
# Error text in a result that is not flagged isError ("soft errors").
_SOFT_ERROR_TEXT = re.compile(
    r"^\s*(error|exception|traceback|failed|failure)\b|\berror:|\bexception:|not found|no such|invalid|"
    r"cannot |can't |could not|unable to|does not exist|is required|missing required",
    re.IGNORECASE)
# Values that are clocks: ISO dates and times, and epoch seconds or milliseconds of this century.
_TIME_VALUE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}|\b\d{2}:\d{2}:\d{2}\b|\b1[6-9]\d{8}(\d{3})?\b")

# A date and time in an answer (ISO-like, to the minute), and epoch seconds or milliseconds.
_DATE_TIME = re.compile(r"\b(\d{4})[-/](\d{2})[-/](\d{2})[T ](\d{2}):(\d{2})(?::(\d{2}))?")
_EPOCH = re.compile(r"\b(1[6-9]\d{8})(\d{3})?\b")
# Descriptions that say the answer depends on the clock ("the current month", "relative to now").
_CLOCK_DESCRIPTION = re.compile(
    r"\b(current|today'?s|present)\s+(date|time|datetime|timestamp|day|week|month|year)\b|\bfrom now\b|"
    r"\brelative to (now|today)\b", re.IGNORECASE)
NOW_WINDOW = 15 * 3600.0  # an answer's local time can be up to 14 hours off UTC

TIME_DEPENDENT_TTL = 3600.0  # a clock's answer is kept an hour, then recorded again


def outcome_of(result: dict[str, Any] | None, error_code: int | None, timed_out: bool) -> CallOutcome:
    if timed_out or error_code == -32002:
        return CallOutcome.TIMEOUT
    if error_code is not None:
        return CallOutcome.RPC_ERROR
    if result is None or result.get("isError"):
        return CallOutcome.SOFT_ERROR
    structured = result.get("structuredContent")
    text = text_of(result)
    if structured is None and text and _SOFT_ERROR_TEXT.search(text[:400]):
        return CallOutcome.SOFT_ERROR
    if structured is not None and _structured_error(structured):
        return CallOutcome.SOFT_ERROR
    return CallOutcome.OK


def _structured_error(structured: Any) -> bool:
    """Structured content that reports a failure: an `error` member without a success flag
    (`{"error": "not found"}`), or a plain return value the SDK wrapped as `{"result": "Error: ..."}`."""
    if not isinstance(structured, dict) or structured.get("success") is True or structured.get("ok") is True:
        return False
    if structured.get("error") not in (None, False, "", [], {}):
        return True
    result = structured.get("result")
    return set(structured) == {"result"} and isinstance(result, str) and bool(_SOFT_ERROR_TEXT.search(result[:400]))


def answer_value(result: dict[str, Any] | None) -> Any:
    """The comparable answer: structured content, else JSON parsed from the text, else the text."""
    if not result:
        return None
    if result.get("structuredContent") is not None:
        return result["structuredContent"]
    text = text_of(result)
    try:
        return json.loads(text)
    except ValueError:
        return text


def changed_values(first: Any, second: Any) -> dict[str, tuple[Any, Any]]:
    """JSON path → (first, second) for every leaf that differs between two answers (a leaf missing on
    one side is None there)."""
    a, b = leaf_values(first), leaf_values(second)
    return {path: (a.get(path), b.get(path)) for path in sorted(a.keys() | b.keys())
            if path not in a or path not in b or a[path] != b[path]}


def env_names(texts: list[str]) -> list[str]:
    """Environment variables named in error texts (secret-looking names first, else any NAME_LIKE_THIS
    next to the words 'environment' or 'env')."""
    found: list[str] = []
    for text in texts:
        names = _ENV_NAME.findall(text)
        if not names and re.search(r"environment|\benv\b", text, re.IGNORECASE):
            names = _ANY_ENV_NAME.findall(text)
        for name in names:
            if name not in found:
                found.append(name)
    return found


def classify_tool(calls: list[ProbeCall], annotations: dict[str, Any] | None = None,
                  description: str | None = None) -> ToolClassification:
    """One tool's class from its probe calls (valid ones decide; the invalid call only shows how it refuses)."""
    valid = [call for call in calls if call.valid]
    evidence: list[str] = []
    writes = sorted({path for call in calls for path in call.files_changed})
    if writes and _created_on_first_use(calls):
        evidence.append(f"created {', '.join(writes[:3])} on its first call only and wrote nothing after: the "
                        "server's storage made on first use, not a write of this tool")
        writes = []
    hosts = sorted({host for call in calls for host in call.egress})
    failures = [call for call in valid if call.outcome is not CallOutcome.OK]
    texts = [call.text for call in failures]
    needs_env = env_names(texts)
    read_only = [text for text in texts if re.search(r"EROFS|read-only file system", text, re.IGNORECASE)]
    if read_only:
        evidence.append(f"tried to write outside its own dirs (read-only in the sandbox): {read_only[0][:160]!r}; "
                        "point it at its work dir with an argument or variable")
    if writes:
        evidence.append(f"wrote {len(writes)} file(s) in its own dirs, e.g. {writes[0]}")
    deterministic, unstable, time_dependent = _determinism(valid)
    if deterministic is False:
        evidence.append(f"two identical calls differed at {', '.join(unstable[:4])}")
    clock = _current_time_in(valid)
    if deterministic is not None and clock is None and description \
            and (said := _CLOCK_DESCRIPTION.search(description)):
        clock = f"its description says it depends on the clock ({said[0]!r})"
    if clock is not None and not time_dependent:
        # Two calls within the same second answer alike; the answer still changes as the clock moves.
        time_dependent, deterministic = True, False
        evidence.append(clock)
    status: ToolStatus
    if any(call.outcome is CallOutcome.OK for call in valid):
        status = ToolStatus.WORKS
    elif hosts or any(_NETWORK_TEXT.search(text) for text in texts):
        status = ToolStatus.NEEDS_NETWORK
        evidence.append(f"tried to reach {', '.join(hosts)}" if hosts else "failed with a network error offline")
    elif needs_env or any(_CREDENTIAL_TEXT.search(text) for text in texts):
        status = ToolStatus.NEEDS_CREDENTIALS
        evidence.append("failed asking for credentials" + (f" ({', '.join(needs_env)})" if needs_env else ""))
    elif valid and all(call.outcome is CallOutcome.TIMEOUT for call in valid):
        status = ToolStatus.TIMEOUT
        evidence.append("every call timed out")
    elif any(call.outcome is CallOutcome.SOFT_ERROR for call in valid):
        status = ToolStatus.SOFT_ERROR
        evidence.append(f"answered with an error: {texts[0][:120]!r}" if texts else "answered with an error")
    else:
        status = ToolStatus.RPC_ERROR
        evidence.append(f"JSON-RPC error: {texts[0][:120]!r}" if texts else "no valid call could be made")
    if status is ToolStatus.WORKS and hosts:
        evidence.append(f"also tried to reach {', '.join(hosts)}")
    invalid = next((call for call in calls if not call.valid), None)
    if invalid is not None and invalid.outcome is CallOutcome.OK:
        evidence.append("accepted a call its own schema forbids (a simulator must not refuse such calls either)")
    return ToolClassification(status=status, deterministic=deterministic, unstable_paths=unstable,
                              time_dependent=time_dependent, writes_files=bool(writes), needs_env=needs_env,
                              network_hosts=hosts, invalid_input=invalid.outcome if invalid else None,
                              evidence=evidence)


def _created_on_first_use(calls: list[ProbeCall]) -> bool:
    """Files changed only by the very first call, and by none of the calls after it (its identical second
    attempt included): the server created its storage lazily, which is no effect of this tool."""
    changed = [index for index, call in enumerate(calls) if call.files_changed]
    return changed == [0] and len(calls) > 1 and calls[0].attempt == 1 and calls[1].attempt == 2


def _current_time_in(valid: list[ProbeCall]) -> str | None:
    """Evidence that a successful answer carries the time it was made at, else None: a date and time (in
    any time zone: offsets are whole quarter hours) or epoch seconds or milliseconds that fall inside the
    call itself, to the value's resolution. A time stored earlier (a file's mtime, a record made by an
    earlier call) falls before the call and is state, not clock."""
    for call in valid:
        if call.outcome is not CallOutcome.OK or call.started_at is None or not call.result:
            continue
        start, end = call.started_at, call.started_at + call.latency_ms / 1000
        text = text_of(call.result) + " " + json.dumps(call.result.get("structuredContent"), default=str)
        for match in _DATE_TIME.finditer(text):
            try:
                parts = [int(part or 0) for part in match.groups()]
                when = dt.datetime(*parts, tzinfo=dt.UTC).timestamp()  # type: ignore[misc, arg-type]  # year..second
            except ValueError:
                continue
            resolution = 1.0 if match[6] else 60.0
            offset = round((when - start) / 900) * 900  # the answer's time zone, to the quarter hour
            if abs(offset) <= NOW_WINDOW and start - resolution <= when - offset <= end + 1:
                return f"answered with the time of the call ({match[0]!r})"
        for match in _EPOCH.finditer(text):
            when, resolution = (int(match[0]) / 1000, 0.001) if match[2] else (int(match[0]), 1.0)
            if start - resolution <= when <= end + 1:
                return f"answered with the time of the call ({match[0]!r} since the epoch)"
    return None


def _determinism(valid: list[ProbeCall]) -> tuple[bool | None, list[str], bool]:
    """Compare each set's two attempts (successful ones): (deterministic, unstable paths, clock-like)."""
    by_kind: dict[str, dict[int, ProbeCall]] = {}
    for call in valid:
        if call.outcome is CallOutcome.OK:
            by_kind.setdefault(call.kind, {})[call.attempt] = call
    unstable: list[str] = []
    time_dependent = False
    compared = False
    for attempts in by_kind.values():
        if 1 not in attempts or 2 not in attempts:
            continue
        compared = True
        first, second = answer_value(attempts[1].result), answer_value(attempts[2].result)
        for path, values in changed_values(first, second).items():
            if path not in unstable:
                unstable.append(path)
            if any(isinstance(v, (str, int, float)) and _TIME_VALUE.search(str(v)) for v in values):
                time_dependent = True
    if not compared:
        return None, [], False
    return not unstable, unstable, time_dependent


def ignorable_arguments(calls: list[ProbeCall]) -> list[str]:
    """Arguments whose change did not change a deterministic answer: `vary:ARG` calls that answered
    exactly as the `minimal` call did."""
    minimal = next((call for call in calls if call.kind == "minimal" and call.outcome is CallOutcome.OK), None)
    if minimal is None:
        return []
    base = answer_value(minimal.result)
    names = []
    for call in calls:
        if call.kind.startswith("vary:") and call.outcome is CallOutcome.OK and answer_value(call.result) == base:
            name = call.kind.removeprefix("vary:")
            if name not in names:
                names.append(name)
    return names


def changes_state(tool: str, annotations: dict[str, Any] | None) -> bool:
    """A tool that says it changes something: by its annotations, else by the verb its name starts with.
    An identical answer twice does not prove the absence of a side effect (a database insert answers
    "ok" both times), so such tools replay in sequence."""
    annotations = annotations or {}
    if annotations.get("readOnlyHint") is True:
        return False
    if annotations.get("destructiveHint") is True or annotations.get("readOnlyHint") is False:
        return True
    return bool(_MUTATING_NAME.match(tool))


_MUTATING_NAME = re.compile(
    r"^(create|add|append|insert|update|upsert|delete|remove|write|set|save|put|post|send|move|rename|edit|"
    r"modify|patch|drop|clear|reset|execute|start|stop|kill|install|upload|commit|push|merge|store|record|"
    r"log|register|enable|disable|assign|close|submit|book|cancel)(_|-|[A-Z])", re.IGNORECASE)


def propose_settings(classification: ToolClassification, calls: list[ProbeCall],
                     annotations: dict[str, Any] | None = None, tool: str = "") -> ProposedSettings:
    """Replay by key only what answered the same twice and changed nothing; everything else in sequence."""
    side_effects = classification.writes_files or changes_state(tool, annotations)
    cacheable = (classification.status is ToolStatus.WORKS and classification.deterministic is True
                 and not side_effects)
    ignore = ignorable_arguments(calls) if cacheable else []
    ttl = TIME_DEPENDENT_TTL if classification.time_dependent else None
    return ProposedSettings(cacheable=cacheable, ignore_args=ignore, ttl=ttl)
