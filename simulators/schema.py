"""`schema` backend: an answer synthesized from the tool's `outputSchema` (no LLM).

Deterministic: the values come from a random generator seeded with a hash of the tool and its
arguments, so the same call always gets the same answer and different calls get different ones.
`structuredContent` is checked against the `outputSchema` before it is returned; `content` is one
text block with the same JSON (as the Python and TypeScript SDKs write it).

Without an `outputSchema` the answer imitates the shape of the nearest recorded answer (JSON of the
same structure with new values, or the same text with new numbers; images, audio and resources as they
were recorded), else it is a short generic text.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import re
import string
import uuid
from decimal import Decimal
from typing import Any

from simgate.canonical import digest
from simgate.errors import SimgateError
from simgate.private_apis import regex_parser
from simgate.results import schema_error, strip_meta, text_of, text_result
from simgate.simulators.base import SimulationError, SimulationRequest, SimulationResult
from simgate.simulators.similarity import nearest

ATTEMPTS = 8
EXPAND_DEPTH = 4  # below this, optional properties and array items are added; deeper, only what is required
_EPOCH = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
_WORDS = ("alpha", "bravo", "cedar", "delta", "ember", "falcon", "garnet", "harbor", "indigo", "juniper",
          "kestrel", "lumen", "maple", "nova", "onyx", "pine", "quartz", "river", "sierra", "tundra")


class SchemaSynthesisError(SimgateError):
    pass


class _Synthesizer:
    """Builds one value for a schema; `hints` are argument values reused when a property has their name."""

    def __init__(self, root: dict[str, Any], rng: random.Random, hints: dict[str, Any], *, rich: bool) -> None:
        self.root = root
        self.rng = rng
        self.hints = hints
        self.rich = rich  # False: required properties only, minimal arrays (a fallback that satisfies more schemas)

    # -- schema plumbing
    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise SchemaSynthesisError(f"remote $ref {ref!r} is not supported")
        node: Any = self.root
        for raw in ref[1:].split("/")[1:] if ref != "#" else []:
            part = raw.replace("~1", "/").replace("~0", "~")
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    def merged(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        """The schema with `$ref` followed and `allOf` folded in (properties and required combined)."""
        seen = 0
        while "$ref" in schema and seen < 32:
            target = self.resolve(schema["$ref"])
            schema = {**(target if isinstance(target, dict) else {}), **{k: v for k, v in schema.items() if k != "$ref"}}
            seen += 1
        if "allOf" in schema:
            out: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                if not isinstance(part, dict):
                    continue
                part = self.merged(part, depth)
                for key, value in part.items():
                    if key == "properties":
                        out["properties"] = {**out.get("properties", {}), **value}
                    elif key == "required":
                        out["required"] = sorted({*out.get("required", []), *value})
                    else:
                        out.setdefault(key, value)
            schema = out
        return schema

    # -- values
    def value(self, schema: Any, name: str | None = None, depth: int = 0) -> Any:
        if schema is True or schema == {} or schema is None:
            return self.string({}, name)
        if schema is False:
            raise SchemaSynthesisError("a `false` schema admits no value")
        schema = self.merged(schema, depth)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self.rng.choice(schema["enum"])
        if self.rich and isinstance(schema.get("examples"), list) and schema["examples"]:
            return self.rng.choice(schema["examples"])
        for key in ("oneOf", "anyOf"):
            if schema.get(key):
                options = [o for o in schema[key] if not (isinstance(o, dict) and o.get("type") == "null")]
                option = self.rng.choice(options) if options and self.rich else (options or schema[key])[0]
                rest = {k: v for k, v in schema.items() if k not in ("oneOf", "anyOf")}
                return self.value({**rest, **self.merged(option, depth)} if isinstance(option, dict) else option,
                                  name, depth)
        kind = self.kind(schema)
        if name is not None and name in self.hints and self.rich and _fits(schema, kind, self.hints[name]):
            return self.hints[name]
        if kind == "object":
            return self.object(schema, depth)
        if kind == "array":
            return self.array(schema, name, depth)
        if kind == "integer":
            return self.integer(schema, name)
        if kind == "number":
            return self.number(schema, name)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self.string(schema, name)

    @staticmethod
    def kind(schema: dict[str, Any]) -> str:
        declared = schema.get("type")
        if isinstance(declared, list):
            real = [t for t in declared if t != "null"]
            return real[0] if real else "null"
        if isinstance(declared, str):
            return declared
        if any(k in schema for k in ("properties", "additionalProperties", "required", "patternProperties")):
            return "object"
        if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
            return "number"
        return "string"

    def object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        out: dict[str, Any] = {}
        deep = depth >= EXPAND_DEPTH
        for key, sub in properties.items():
            if key in required or (self.rich and not deep and self.rng.random() < 0.75):
                out[key] = self.value(sub, key, depth + 1)
        for key in sorted(required - set(out)):  # required but not described
            out[key] = self.value(schema.get("additionalProperties", {}) if isinstance(
                schema.get("additionalProperties"), dict) else {}, key, depth + 1)
        extra = schema.get("additionalProperties")
        wanted = int(schema.get("minProperties", 0))
        if not properties and isinstance(extra, dict) and self.rich and not deep:
            wanted = max(wanted, self.rng.randint(1, 3))
        if extra is not False:
            sub = extra if isinstance(extra, dict) else {}
            index = 1
            while len(out) < wanted and index < 100:
                key = f"{self.rng.choice(_WORDS)}_{index}"
                if key not in out:
                    out[key] = self.value(sub, key, depth + 1)
                index += 1
        maximum = schema.get("maxProperties")
        if isinstance(maximum, int) and len(out) > maximum:
            keep = [k for k in out if k in required] + [k for k in out if k not in required]
            out = {k: out[k] for k in keep[:maximum]}
        return out

    def array(self, schema: dict[str, Any], name: str | None, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        if isinstance(items, list):  # draft 4-7 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        low = int(schema.get("minItems", 0))
        high = schema.get("maxItems")
        count = self.rng.randint(1, 3) if self.rich and depth < EXPAND_DEPTH else 0
        count = max(low, count, len(prefix or []) if self.rich else 0)
        if isinstance(high, int):
            count = min(count, high)
        singular = name[:-1] if name and name.endswith("s") else name
        out: list[Any] = []
        seen: set[str] = set()
        tries = 0
        while len(out) < count and tries < count * 10 + 10:
            tries += 1
            index = len(out)
            if prefix and index < len(prefix):
                sub = prefix[index]
            elif items is False:
                break
            else:
                sub = items if items is not None else {}
            item = self.value(sub, singular, depth + 1)
            if schema.get("uniqueItems"):
                key = json.dumps(item, sort_keys=True, default=str)
                if key in seen:
                    continue
                seen.add(key)
            out.append(item)
        return out

    def _bounds(self, schema: dict[str, Any], integer: bool) -> tuple[float, float]:
        step = 1 if integer else 0.01
        low: float | None = schema.get("minimum")
        high: float | None = schema.get("maximum")
        ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if ex_low is True and low is not None:  # draft 4 booleans
            low += step
        elif isinstance(ex_low, (int, float)) and not isinstance(ex_low, bool):
            low = max(low, ex_low + step) if low is not None else ex_low + step
        if ex_high is True and high is not None:
            high -= step
        elif isinstance(ex_high, (int, float)) and not isinstance(ex_high, bool):
            high = min(high, ex_high - step) if high is not None else ex_high - step
        if low is None and high is None:
            low, high = 0, 100
        elif low is None:
            assert high is not None
            low = min(0, high) if high >= 0 else high - 100
        elif high is None:
            high = low + 100
        high = min(high, low + 10_000)
        return float(low), float(high)

    def integer(self, schema: dict[str, Any], name: str | None) -> int:
        low, high = self._bounds(schema, True)
        multiple = schema.get("multipleOf")
        if isinstance(multiple, (int, float)) and multiple > 0:
            k = self.rng.randint(math.ceil(low / multiple), max(math.ceil(low / multiple), math.floor(high / multiple)))
            return int(k * multiple)
        return self.rng.randint(math.ceil(low), max(math.ceil(low), math.floor(high)))

    def number(self, schema: dict[str, Any], name: str | None) -> float | int:
        low, high = self._bounds(schema, False)
        multiple = schema.get("multipleOf")
        if isinstance(multiple, (int, float)) and multiple > 0:
            k = self.rng.randint(math.ceil(low / multiple), max(math.ceil(low / multiple), math.floor(high / multiple)))
            exact = Decimal(k) * Decimal(str(multiple))
            return int(exact) if exact == exact.to_integral_value() else float(exact)
        value = round(self.rng.uniform(low, high), 2)
        return min(max(value, low), high)

    def string(self, schema: dict[str, Any], name: str | None) -> str:
        text = self._string_value(schema, name or "")
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        if len(text) < low:
            text += "".join(self.rng.choice(string.ascii_lowercase) for _ in range(low - len(text)))
        if isinstance(high, int) and len(text) > high:
            text = text[:high]
        return text

    def _string_value(self, schema: dict[str, Any], original: str) -> str:
        rng, name = self.rng, original.lower()
        moment = _EPOCH + dt.timedelta(seconds=rng.randint(0, 2 * 365 * 86400))
        fmt = schema.get("format")
        if fmt == "date-time":
            return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        if fmt == "date":
            return moment.strftime("%Y-%m-%d")
        if fmt == "time":
            return moment.strftime("%H:%M:%SZ")
        if fmt == "duration":
            return f"PT{rng.randint(1, 59)}M"
        if fmt in ("email", "idn-email"):
            return f"{rng.choice(_WORDS)}{rng.randint(1, 99)}@example.com"
        if fmt in ("uri", "url", "iri", "uri-reference", "iri-reference"):
            return f"https://example.com/{rng.choice(_WORDS)}/{rng.randint(1, 999)}"
        if fmt in ("hostname", "idn-hostname"):
            return f"{rng.choice(_WORDS)}-{rng.randint(1, 99)}.example.com"
        if fmt == "ipv4":
            return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        if fmt == "ipv6":
            return f"fd00::{rng.randint(1, 0xffff):x}"
        if fmt == "uuid":
            return str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if fmt == "json-pointer":
            return f"/{rng.choice(_WORDS)}"
        if fmt == "regex":
            return "^[a-z]+$"
        if isinstance(schema.get("pattern"), str):
            generated = _from_pattern(schema["pattern"], rng)
            if generated is not None:
                return generated
        if name.endswith(("_at", "time", "date", "timestamp")) or name in ("created", "updated", "modified"):
            return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        if name in ("id", "uuid", "key") or name.endswith(("_id", "-id", "_key")) or original.endswith("Id"):
            return f"{rng.getrandbits(48):012x}"
        if "email" in name:
            return f"{rng.choice(_WORDS)}{rng.randint(1, 99)}@example.com"
        if "url" in name or "uri" in name or "link" in name:
            return f"https://example.com/{rng.choice(_WORDS)}/{rng.randint(1, 999)}"
        if "path" in name or "file" in name:
            return f"/data/{rng.choice(_WORDS)}/{rng.choice(_WORDS)}.txt"
        if "name" in name or "title" in name:
            return f"{rng.choice(_WORDS).capitalize()} {rng.choice(_WORDS).capitalize()}"
        if any(word in name for word in ("description", "message", "text", "content", "summary", "note")):
            return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 9))).capitalize() + "."
        return f"{rng.choice(_WORDS)}-{rng.randint(1, 999)}"


def _fits(schema: dict[str, Any], kind: str, value: Any) -> bool:
    """Whether an argument value can stand for a primitive property (the final validation has the last word)."""
    checks = {"string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
              "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}
    check = checks.get(kind)
    return bool(check and check(value) and not schema.get("format") and "pattern" not in schema)


def _from_pattern(pattern: str, rng: random.Random) -> str | None:
    """A string matching a regular expression, for the common subset (classes, repeats, groups, alternatives)."""
    sre_parse = regex_parser()
    try:
        parsed = sre_parse.parse(pattern)
    except re.error:
        return None
    categories = {"CATEGORY_DIGIT": string.digits, "CATEGORY_WORD": string.ascii_letters + string.digits + "_",
                  "CATEGORY_SPACE": " ", "CATEGORY_NOT_DIGIT": string.ascii_letters,
                  "CATEGORY_NOT_WORD": "-.", "CATEGORY_NOT_SPACE": string.ascii_letters}

    def emit(items: Any) -> str:
        out = []
        for op, arg in items:
            name = str(op)
            if name == "LITERAL":
                out.append(chr(arg))
            elif name == "NOT_LITERAL":
                out.append("a" if chr(arg) != "a" else "b")
            elif name == "ANY":
                out.append(rng.choice(string.ascii_lowercase))
            elif name == "IN":
                out.append(pick(arg))
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                low, high, sub = arg
                high = min(high, low + 3) if high != sre_parse.MAXREPEAT else low + rng.randint(1, 3)
                out.extend(emit(sub) for _ in range(rng.randint(low, max(low, high))))
            elif name == "SUBPATTERN":
                out.append(emit(arg[-1]))
            elif name == "ATOMIC_GROUP":
                out.append(emit(arg))
            elif name == "BRANCH":
                out.append(emit(rng.choice(arg[1])))
            elif name == "CATEGORY":
                out.append(rng.choice(categories.get(str(arg), "a")))
            elif name in ("AT", "ASSERT", "ASSERT_NOT"):
                continue
            else:
                raise ValueError(name)
        return "".join(out)

    def pick(choices: Any) -> str:
        if choices and str(choices[0][0]) == "NEGATE":
            return "a"
        op, arg = rng.choice(choices)
        name = str(op)
        if name == "LITERAL":
            return chr(arg)
        if name == "RANGE":
            return chr(rng.randint(arg[0], arg[1]))
        if name == "CATEGORY":
            return rng.choice(categories.get(str(arg), "a"))
        return "a"

    try:
        for _ in range(5):
            candidate = emit(parsed)
            if re.search(pattern, candidate):
                return candidate
    except (ValueError, IndexError, TypeError):
        return None
    return None


def synthesize(schema: dict[str, Any], seed: str | int, hints: dict[str, Any] | None = None) -> Any:
    """A value valid against `schema`, the same for the same seed. Raises `SchemaSynthesisError`."""
    last = "no attempt"
    for attempt in range(ATTEMPTS):
        rich = attempt < ATTEMPTS - 2
        rng = random.Random(f"{seed}/{attempt}")
        try:
            value = _Synthesizer(schema, rng, hints or {}, rich=rich).value(schema)
        except (SchemaSynthesisError, KeyError, IndexError, TypeError, ValueError, RecursionError) as exc:
            last = f"{type(exc).__name__}: {exc}"
            continue
        try:
            error = schema_error(schema, value)
        except ValueError as exc:
            raise SchemaSynthesisError(str(exc)) from None
        if error is None:
            return value
        last = error
    raise SchemaSynthesisError(f"no value satisfied the schema after {ATTEMPTS} attempts (last: {last})")


def infer_schema(value: Any) -> dict[str, Any]:
    """The shape of a JSON value as a schema (every key required; strings that look like times keep that format)."""
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer", "minimum": 0} if value >= 0 else {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number", "minimum": 0} if value >= 0 else {"type": "number"}
    if value is None:
        return {"type": "null"}
    if isinstance(value, str):
        try:
            dt.datetime.fromisoformat(value)
            if "T" in value and len(value) >= 16:
                return {"type": "string", "format": "date-time"}
        except ValueError:
            pass
        return {"type": "string"}
    if isinstance(value, list):
        schema: dict[str, Any] = {"type": "array", "minItems": min(len(value), 1), "maxItems": max(len(value), 1)}
        if value:
            schema["items"] = infer_schema(value[0])
        return schema
    if isinstance(value, dict):
        return {"type": "object", "properties": {k: infer_schema(v) for k, v in value.items()},
                "required": list(value), "additionalProperties": False}
    return {}


def _renumber(text: str, rng: random.Random) -> str:
    """The same text with each number replaced by another of as many digits."""
    def swap(match: re.Match[str]) -> str:
        digits = match.group(0)
        first = str(rng.randint(1, 9)) if len(digits) > 1 else str(rng.randint(0, 9))
        return first + "".join(str(rng.randint(0, 9)) for _ in digits[1:])
    return re.sub(r"\d+", swap, text)


class SchemaSimulator:
    backend = "schema"

    async def simulate(self, request: SimulationRequest) -> SimulationResult:
        return SimulationResult(result=self.answer(request), backend=self.backend, model=None)

    def answer(self, request: SimulationRequest) -> dict[str, Any]:
        seed = digest({"tool": request.tool.name, "arguments": request.arguments})
        hints = {k: v for k, v in request.arguments.items() if not isinstance(v, (dict, list))}
        schema = request.tool.output_schema
        if schema is not None:
            try:
                structured = synthesize(schema, seed, hints)
            except SchemaSynthesisError as exc:
                raise SimulationError(f"cannot synthesize a result for the outputSchema of {request.tool.name!r}: "
                                      f"{exc}") from None
            return text_result(json.dumps(structured, indent=2, ensure_ascii=False), structured=structured)
        return self._imitate(request, seed, hints)

    def _imitate(self, request: SimulationRequest, seed: str, hints: dict[str, Any]) -> dict[str, Any]:
        usable = [e for e in request.examples if e.result is not None and not e.result.get("isError")]
        if not usable:
            return text_result(f"{request.tool.name} completed successfully.")
        best = usable[nearest(request.arguments, [e.arguments for e in usable], 1)[0]]
        recorded = strip_meta(best.result) or {}
        blocks = [b for b in recorded.get("content") or [] if isinstance(b, dict)]
        if any(b.get("type") != "text" for b in blocks):
            return _imitate_blocks(recorded, blocks, seed, hints)
        structured = recorded.get("structuredContent")
        if isinstance(structured, dict):
            try:
                value = synthesize(infer_schema(structured), seed, hints)
                return text_result(json.dumps(value, indent=2, ensure_ascii=False), structured=value)
            except SchemaSynthesisError:
                pass
        text = text_of(recorded)
        return text_result(_imitate_text(text, seed, hints) if text else f"{request.tool.name} completed.")


def _imitate_text(text: str, seed: str, hints: dict[str, Any]) -> str:
    """JSON text: the same shape with new values; other text: the same words with new numbers."""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, (dict, list)):
        try:
            value = synthesize(infer_schema(parsed), seed, hints)
            return json.dumps(value, indent=2 if "\n" in text else None, ensure_ascii=False)
        except SchemaSynthesisError:
            pass
    return _renumber(text, random.Random(seed))


def _imitate_blocks(recorded: dict[str, Any], blocks: list[dict[str, Any]], seed: str,
                    hints: dict[str, Any]) -> dict[str, Any]:
    """A recorded answer with images, audio or resources keeps its blocks in order: the text blocks imitated,
    the others as recorded (a schema cannot make a new image; a text stand-in would change the answer's kind)."""
    content = [{"type": "text", "text": _imitate_text(str(b.get("text", "")), f"{seed}/{i}", hints)}
               if b.get("type") == "text" else b for i, b in enumerate(blocks)]
    result: dict[str, Any] = {"content": content}
    structured = recorded.get("structuredContent")
    if isinstance(structured, dict):
        try:
            result["structuredContent"] = synthesize(infer_schema(structured), seed, hints)
        except SchemaSynthesisError:
            result["structuredContent"] = structured
    result["isError"] = False
    return result
