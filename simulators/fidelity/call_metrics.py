"""Call-level fidelity metrics: plain functions on two answers to the same call (live L, simulated S,
or a second live L′ for the noise floor). Each takes answers as `as_answer` accepts them.

None means "not applicable" (e.g. path Jaccard when neither answer has structured data); aggregation
skips it, so a metric is averaged only over the calls it says something about.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import mcp_types
from pydantic import ValidationError

from simgate.canonical import canonical_json
from simgate.results import schema_error
from simgate.simulators.fidelity.answers import Answer, as_answer, payload

Outcome = Literal["success", "empty", "not_found_or_invalid", "error", "rate_limit", "simulator_failure"]
OUTCOMES: tuple[Outcome, ...] = ("success", "empty", "not_found_or_invalid", "error", "rate_limit",
                                 "simulator_failure")
FAILURES: frozenset[str] = frozenset({"not_found_or_invalid", "error", "rate_limit"})
NUMBER_TOLERANCE = 0.10  # relative: 105 is "the same" as 100, 111 is not

# simgate's own codes (gateway/errors.py); simulators never import gateway.
RATE_LIMITED_CODE = -32006
SIMULATOR_FAILURE_CODES = frozenset({-32004, -32005})  # no simulator configured; the simulator could not answer
_RATE_LIMIT = re.compile(r"rate.?limit|too many requests|\b429\b|quota (exceeded|exhausted)|throttl", re.IGNORECASE)
_NOT_FOUND_OR_INVALID = re.compile(
    r"not found|no such|does not exist|doesn't exist|unknown|invalid|missing|required|must be|not allowed|"
    r"validation|malformed|cannot parse|could not parse|unexpected (argument|parameter)|\b404\b|\b400\b", re.IGNORECASE)
# Soft errors: error text with isError false (SQL errors, missing files...). Anchored at the start of
# the text or a line so that a result that merely mentions "error" stays a success.
_SOFT_ERROR = re.compile(
    r"^\s*(error\b|exception\b|traceback \(most recent call last\)|failed\b|failure\b|fatal\b|"
    r"(?:[\w.-]+\s){0,2}[\w.]*(?:error|exception)\s*:)", re.IGNORECASE | re.MULTILINE)
_NO_RESULTS = re.compile(r"^\s*(no (results?|matches|entries|items|records|data)( found)?|nothing found|none)\.?\s*$",
                         re.IGNORECASE)


# ---------------------------------------------------------------------------------------------- validity


def schema_validity(answer: Any, output_schema: dict[str, Any] | None) -> tuple[bool, str | None]:
    """Is the answer a well-formed MCP answer, with `structuredContent` valid against `outputSchema`
    when the tool declares one and the call succeeded? Returns (valid, the first problem)."""
    ans = as_answer(answer)
    if ans.missing:
        return False, "no answer"
    if ans.error is not None:
        try:
            mcp_types.ErrorData.model_validate(ans.error)
        except ValidationError as exc:
            return False, f"malformed JSON-RPC error: {exc.errors()[0]['msg']}"
        return True, None
    assert ans.result is not None
    try:
        mcp_types.CallToolResult.model_validate(ans.result)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        return False, f"malformed CallToolResult at {where}: {error['msg']}"
    if output_schema is None or ans.result.get("isError"):
        return True, None
    if "structuredContent" not in ans.result or ans.result["structuredContent"] is None:
        return False, "structuredContent is missing (the tool declares an outputSchema)"
    try:
        problem = schema_error(output_schema, ans.result["structuredContent"])
    except ValueError as exc:
        return False, f"the tool's outputSchema is unusable: {exc}"
    return (problem is None), (f"structuredContent {problem}" if problem else None)


# ---------------------------------------------------------------------------------------------- outcomes


def is_soft_error(answer: Any) -> bool:
    """Error text (or a JSON `{"error": ...}`) in a result that does not say `isError`."""
    ans = as_answer(answer)
    if ans.result is None or ans.result.get("isError"):
        return False
    data = payload(ans)
    if isinstance(data, dict) and data.get("error") and len(data) <= 3:
        return True
    return bool(_SOFT_ERROR.search(ans.text))


def _failure_kind(text: str, code: int | None = None) -> Outcome:
    if code == RATE_LIMITED_CODE or _RATE_LIMIT.search(text):
        return "rate_limit"
    if code == -32602 or _NOT_FOUND_OR_INVALID.search(text):
        return "not_found_or_invalid"
    return "error"


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (list, dict, str)) and not value:
        return True
    if isinstance(value, dict):  # {"results": [], "count": 0}: a wrapper around nothing
        return all(_is_empty(v) or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0)
                   for v in value.values())
    return False


def outcome_class(answer: Any) -> Outcome:
    """success / empty / not_found_or_invalid / error / rate_limit, or simulator_failure. JSON-RPC errors,
    `isError` and soft errors are failures (which kind: from the code and the text). No answer at all, or
    the gateway's own "the simulator could not answer" error, is `simulator_failure`: a class no live
    answer has, so a failing simulator never agrees with a live error."""
    ans = as_answer(answer)
    if ans.missing:
        return "simulator_failure"
    if ans.error is not None:
        code = ans.error.get("code")
        if code in SIMULATOR_FAILURE_CODES:
            return "simulator_failure"
        return _failure_kind(ans.text, code if isinstance(code, int) else None)
    assert ans.result is not None
    if ans.result.get("isError") or is_soft_error(ans):
        return _failure_kind(ans.text)
    data = payload(ans)
    if data is not None:
        return "empty" if _is_empty(data) else "success"
    text = ans.text.strip()
    if not ans.result.get("content") and ans.result.get("structuredContent") is None:
        return "empty"
    if not text and all((b or {}).get("type") == "text" for b in ans.result.get("content") or []):
        return "empty"
    if text in ("null", "[]", "{}", '""') or _NO_RESULTS.match(text):
        return "empty"
    return "success"


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's κ of two raters over categorical labels: (p_o − p_e) / (1 − p_e).

    None for no pairs, and None (undefined) when p_e = 1: both raters used one and the same label
    throughout, so chance explains all the agreement and κ is 0/0 (`kappa_undefined` says why)."""
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(1 for a, b in pairs if a == b) / n
    left, right = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(left[label] * right[label] for label in set(left) | set(right)) / (n * n)
    if math.isclose(expected, 1.0):
        return None
    return (observed - expected) / (1 - expected)


def kappa_undefined(pairs: Sequence[tuple[str, str]]) -> str | None:
    """Why κ is undefined for these pairs (one class on both sides, with its count), or None when it is
    defined or there are no pairs."""
    if not pairs or cohen_kappa(pairs) is not None:
        return None
    label = pairs[0][0]
    return (f"undefined: both sides answered {label!r} on all {len(pairs)} call(s) "
            f"(confusion {label}→{label}: {len(pairs)}), so agreement beyond chance cannot be measured")


# ---------------------------------------------------------------------------------------------- structure


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def json_paths(value: Any, prefix: str = "$") -> dict[str, frozenset[str]]:
    """Every path of a JSON value (array indexes as `[*]`, so lists of any length compare) with the
    set of JSON types seen there. Key order never matters."""
    out: dict[str, set[str]] = {}

    def walk(node: Any, path: str) -> None:
        out.setdefault(path, set()).add(_json_type(node))
        if isinstance(node, dict):
            for key, item in node.items():
                walk(item, f"{path}.{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, f"{path}[*]")

    walk(value, prefix)
    return {path: frozenset(types) for path, types in out.items()}


def _paths_pair(a: Any, b: Any) -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]] | None:
    pa, pb = payload(as_answer(a)), payload(as_answer(b))
    if pa is None and pb is None:
        return None
    return (json_paths(pa) if pa is not None else {}), (json_paths(pb) if pb is not None else {})


def path_jaccard(a: Any, b: Any) -> float | None:
    """|paths(a) ∩ paths(b)| / |paths(a) ∪ paths(b)| of the answers' structured data; None when neither has any."""
    pair = _paths_pair(a, b)
    if pair is None:
        return None
    left, right = set(pair[0]), set(pair[1])
    return len(left & right) / len(left | right)


def type_agreement(a: Any, b: Any) -> float | None:
    """Share of the paths below the root that both answers have whose JSON types agree. The root is
    not counted (two objects always "agree" there), except that roots of different types (an object
    against a list, or against nothing) score 0. None when neither has structured data, or they share
    no path below the root."""
    pair = _paths_pair(a, b)
    if pair is None:
        return None
    if pair[0].get("$") != pair[1].get("$"):
        return 0.0
    common = (set(pair[0]) & set(pair[1])) - {"$"}
    if not common:
        return None
    return sum(1 for path in common if pair[0][path] == pair[1][path]) / len(common)


# ---------------------------------------------------------------------------------------------- values


def leaf_values(value: Any, prefix: str = "$") -> dict[str, Any]:
    """Scalar leaves by concrete path (array indexes kept: `$.items[0].id`)."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(leaf_values(item, f"{prefix}.{key}"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.update(leaf_values(item, f"{prefix}[{index}]"))
    else:
        out[prefix] = value
    return out


def values_agree(a: Any, b: Any, tolerance: float = NUMBER_TOLERANCE) -> bool:
    """Numbers within `tolerance` of the reference `a` (|b − a| ≤ 10% of |a|), everything else equal
    (strings exactly; a boolean is not a number)."""
    numeric = (int, float)
    if isinstance(a, numeric) and isinstance(b, numeric) and not isinstance(a, bool) and not isinstance(b, bool):
        return abs(b - a) <= tolerance * abs(a) + 1e-12
    return type(a) is type(b) and a == b


def _canonical_item(value: Any) -> str:
    return canonical_json(value)


def unordered_lists(live: Any, second_live: Any) -> set[str]:
    """Concrete paths of the lists whose order two live answers to the same call disagree on while
    holding the same items (a multiset): the tool does not determine their order, so it is no
    difference. Lists whose order the two agree on (or whose items differ) stay ordered."""
    out: set[str] = set()

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in a.keys() & b.keys():
                walk(a[key], b[key], f"{path}.{key}")
        elif isinstance(a, list) and isinstance(b, list):
            left, right = [_canonical_item(x) for x in a], [_canonical_item(x) for x in b]
            if left != right and Counter(left) == Counter(right):
                out.add(path)
                return
            for index, (x, y) in enumerate(zip(a, b, strict=False)):
                walk(x, y, f"{path}[{index}]")

    walk(payload(as_answer(live)), payload(as_answer(second_live)), "$")
    return out


def as_multisets(value: Any, unordered: set[str], prefix: str = "$") -> Any:
    """The value with every list at an `unordered` path sorted into one canonical order, so that
    comparing leaf by leaf compares those lists as multisets."""
    if not unordered:
        return value
    if isinstance(value, dict):
        return {key: as_multisets(item, unordered, f"{prefix}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        if prefix in unordered:
            return sorted(value, key=_canonical_item)
        return [as_multisets(item, unordered, f"{prefix}[{i}]") for i, item in enumerate(value)]
    return value


def _leaves(answer: Any, unordered: set[str] | None) -> dict[str, Any]:
    data = payload(as_answer(answer))
    if data is None:
        return {}
    return leaf_values(as_multisets(data, unordered or set()))


def stable_paths(live: Any, second_live: Any, unordered: set[str] | None = None) -> set[str]:
    """Leaf paths whose values two live answers to the same call agree on: what the tool determines.
    `unordered` lists (see `unordered_lists`) are compared as multisets."""
    la, lb = _leaves(live, unordered), _leaves(second_live, unordered)
    return {path for path in la.keys() & lb.keys() if values_agree(la[path], lb[path])}


def value_fidelity(live: Any, other: Any, paths: set[str] | None = None, *,
                   unordered: set[str] | None = None) -> float | None:
    """Share of `paths` (default: every leaf of the live answer's structured data) on which `other`
    agrees with `live`; a path `other` lacks disagrees; lists at `unordered` paths are compared as
    multisets. None when there is no path to judge."""
    reference, candidate = _leaves(live, unordered), _leaves(other, unordered)
    judged = set(reference) if paths is None else paths & set(reference)
    if not judged:
        return None
    return sum(1 for p in judged if p in candidate and values_agree(reference[p], candidate[p])) / len(judged)


# ---------------------------------------------------------------------------------------------- text


def _canonical_text(answer: Answer) -> str:
    """The text compared by BLEU: the payload as canonical JSON when there is one (key order and
    indentation never count), else the text shown to the client."""
    data = payload(answer)
    if data is not None:
        return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))
    return answer.text


def bleu4(reference: Any, hypothesis: Any) -> float:
    """Sentence BLEU-4 (sacrebleu, 0–100, exponential smoothing) of the hypothesis's text against the reference's.
    Two empty texts are identical: 100."""
    import sacrebleu

    ref, hyp = _canonical_text(as_answer(reference)), _canonical_text(as_answer(hypothesis))
    if not ref.strip() and not hyp.strip():
        return 100.0
    return float(sacrebleu.sentence_bleu(hyp, [ref]).score)


def ratio(value: float | None, floor: float | None) -> float | None:
    """A metric divided by its live-vs-live value (the noise floor); None when either is missing or the floor is 0."""
    if value is None or floor is None or floor <= 0:
        return None
    return value / floor
