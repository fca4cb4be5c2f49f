"""The redaction engine: finds secret values in text, plain or encoded, and replaces each with
`[REDACTED:NAME]`. A leaf module: it knows nothing of the gateway.

One pattern per secret form is built (not a list of spellings), so every mix of the encodings
below is found with one linear scan:

- the value itself, each character of which may also be written as a JSON or Python escape
  (`\\u00e9`, `\\u00E9`, `\\/`, `\\"`, `\\xe9`, UTF-8 `\\xc3\\xa9`; up to 4 backslashes, for text
  escaped again), or as percent-encoded UTF-8 bytes in any case (`%C3%a9`), or `+` for a space;
  some characters encoded and others not, too;
- its base64, standard or URL-safe (or a mix), padded or not, and the stretch of it that lies
  inside a longer base64 text at each of the three bit alignments (`Basic base64(user:secret)`,
  a PEM or MIME body); its `+ / - _ =` may be percent- or JSON-escaped as above;
- its UTF-8 bytes in hex, upper, lower or mixed case.

Between any two characters of any form (bytes of hex), one line break (`\\n` or `\\r\\n`, as a
character or as a JSON escape) with up to 16 spaces or tabs around it is allowed: base64 wrapped at
64 or 76 columns. Console output (`wrapped`) is also scanned with every line break and its padding
taken out, as a console logger wraps lines anywhere (inside `%XX` too). A secret split between
adjacent items of a list (the text content items of an MCP result) is found by scanning their texts
joined; one split between the pieces of a stream by `StreamRedactor`, which holds back a tail that
could begin one.

Out of reach by design (no scan can see them): a value the sender transformed in a way that is not
an encoding (reversed, encrypted, hashed, compressed, split across fields or messages, one
character at a time on request).
"""

from __future__ import annotations

import base64
import bisect
import itertools
import re
import threading
from collections.abc import Mapping
from typing import Any

import regex

MIN_FRAGMENT = 8  # shortest base64 stretch looked for inside a longer base64 text
MAX_HELD = 65536  # characters a stream holds back at most
_BACKSLASHES = r"\\{1,4}"  # an escape's backslash: one as written, more when escaped again (JSON in JSON)
# Spaces around a line break inside a form (an indented PEM body). Bounded, as what a stream holds back
# is; console output is also scanned with its line breaks and any padding taken out (`wrapped`).
_PAD_MAX = 16
_PAD = rf"[ \t]{{0,{_PAD_MAX}}}"
_BREAK = rf"(?:{_PAD}(?:\r?\n|(?:{_BACKSLASHES}r)?{_BACKSLASHES}n){_PAD})?"
_BREAK_MAX = 2 * _PAD_MAX + 2 * 5
_SHORT_ESCAPES = {"\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t", '"': '"', "\\": "\\", "/": "/", "'": "'"}
_OTHER_ALPHABET = {"+": "-", "/": "_", "-": "+", "_": "/"}


def placeholder(name: str) -> str:
    return f"[REDACTED:{name}]"


def _hex_digits(number: int, width: int) -> str:
    """`number` in hex as a pattern that takes either case of each digit."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{number:0{width}x}")


def _written(char: str) -> str:
    """A pattern of every way one character may be written."""
    code, data = ord(char), char.encode("utf-8", "surrogatepass")
    ways = [regex.escape(char), "".join("%" + _hex_digits(byte, 2) for byte in data)]
    if code < 0x10000:
        ways.append(_BACKSLASHES + "u" + _hex_digits(code, 4))
    else:
        high, low = divmod(code - 0x10000, 0x400)
        ways.append(f"{_BACKSLASHES}u{_hex_digits(0xD800 + high, 4)}{_BACKSLASHES}u{_hex_digits(0xDC00 + low, 4)}")
    if code < 0x100:
        ways.append(_BACKSLASHES + "x" + _hex_digits(code, 2))
    if len(data) > 1:
        ways.append("".join(_BACKSLASHES + "x" + _hex_digits(byte, 2) for byte in data))
    if char in _SHORT_ESCAPES:
        ways.append(_BACKSLASHES + regex.escape(_SHORT_ESCAPES[char]))
    if char == " ":
        ways.append(r"\+")
    return "(?:" + "|".join(ways) + ")"


class _Form:
    """One form of a secret: its units (characters of the value, of its hex, or of its base64) and how
    each may be written."""

    __slots__ = ("kind", "tail", "units")

    def __init__(self, kind: str, units: str, tail: str = "") -> None:
        self.kind, self.units, self.tail = kind, units, tail  # tail: base64's optional last character

    def _unit(self, char: str, plain: bool) -> str:
        if self.kind == "hex":
            return _hex_digits(int(char, 16), 1)
        variants = self._variants(char)
        if plain or self._as_it_is(char):
            return regex.escape(char) if len(variants) == 1 else _class(set(variants))
        return "(?:" + "|".join(_written(variant) for variant in variants) + ")"

    def _as_it_is(self, char: str) -> bool:
        """Whether the unit is only looked for as it is: a hex digit, or a letter or digit of base64
        (escaping those is not something an encoder does)."""
        return self.kind == "hex" or (self.kind == "base64" and char.isascii() and char.isalnum())

    def _variants(self, char: str) -> list[str]:
        other = _OTHER_ALPHABET.get(char) if self.kind == "base64" else None
        return [char] if other is None else [char, other]

    def pattern(self, *, plain: bool = False) -> str:
        joined = "".join if plain else _BREAK.join
        units = [self._unit(char, plain) for char in self.units]
        if self.kind == "hex":  # a line break falls between bytes
            units = ["".join(units[i:i + 2]) for i in range(0, len(units), 2)]
        pattern = joined(units)
        if self.tail:
            equals = regex.escape("=") if plain else _written("=")
            pattern += f"(?:{joined(['', self._unit(self.tail, plain)])}(?:{joined(['', equals])}){{0,2}})?"
        return pattern

    def first(self, char: str, *, plain: bool = False) -> set[str]:
        """The characters a unit can begin with (`plain`: written as it is)."""
        if self.kind == "hex":
            return {char.lower(), char.upper()}
        if plain or self._as_it_is(char):
            return set(self._variants(char))
        return {*self._variants(char), "%", "\\", *(["+"] if char == " " else [])}

    def starts(self) -> set[str]:
        """Patterns of the first two characters a match can begin with (a quick test before the pattern)."""
        char = self.units[0]
        following = self.first(self.units[1]) | _BREAK_FIRST if len(self.units) > 1 else None
        if self.kind == "hex":
            following = self.first(self.units[1])  # (no break inside a byte)
        if self._as_it_is(char):
            return {_class(self.first(char)) + (_class(following) if following else "")}
        found = {regex.escape(variant) + (_class(following) if following else "") for variant in self._variants(char)}
        if char == " ":
            found.add(r"\+" + (_class(following) if following else ""))
        for variant in self._variants(char):
            digit = f"{variant.encode('utf-8', 'surrogatepass')[0]:02x}"[0]
            found.add("%" + _class({digit, digit.upper()}))
        found.add(r"\\" + _class(set(r"\ux") | set(_SHORT_ESCAPES.values())))
        return found


_BREAK_FIRST = {" ", "\t", "\r", "\n", "\\"}


def _class(chars: set[str]) -> str:
    return "[" + "".join(regex.escape(char) for char in sorted(chars)) + "]"


def forms(value: str) -> list[_Form]:
    """The forms of `value` that are looked for (see the module's docstring)."""
    data = value.encode("utf-8", "surrogatepass")
    found = [_Form("text", value), _Form("hex", data.hex())]
    for offset in range(3):
        shifted = base64.b64encode(b"\0" * offset + data).decode("ascii")
        start = -(-8 * offset // 6)
        core = shifted[start:(8 * (offset + len(data))) // 6]  # the characters that depend on the value alone
        if offset == 0 and core:
            found.append(_Form("base64", core, tail=shifted[len(core):].rstrip("=")))  # (the value ends the data)
        elif len(core) >= MIN_FRAGMENT:
            found.append(_Form("base64", core))
    return found


_ESCAPES = re.compile(r"[%\\\r\n+]")  # a text without these can only hold the plain forms


class _State:
    """Compiled once per change of the secrets; swapped whole, so readers in other threads see old or new.

    `plain` serves texts with no escape, percent sign or line break (most strings), `full` the others
    (both the standard library's engine, the faster one here); `partial` (the `regex` engine, built on
    first use: only streams need it) tells whether the end of a text could begin a secret."""

    __slots__ = ("_branches", "_lock", "_partial", "candidates", "full", "longest", "multiline", "names", "plain")

    def __init__(self, values: dict[str, str]) -> None:
        # Longer secrets first, so a secret inside another is not what names the match.
        ordered = sorted(values.items(), key=lambda item: (-len(item[0]), item[0]))
        self.names = [name for _, name in ordered]
        self.plain = self.full = self.candidates = self._partial = None
        self._lock = threading.Lock()
        by_value = [forms(value) for value, _ in ordered]
        self._branches = "|".join(f"(?P<s{index}>{'|'.join(form.pattern() for form in value_forms)})"
                                  for index, value_forms in enumerate(by_value))
        self.multiline = any("\n" in value or "\r" in value for value in values)
        self.longest = min(MAX_HELD, max((_longest(value) for value in values), default=0))
        if not ordered:
            return
        every = [form for value_forms in by_value for form in value_forms]
        # Tests of the first character, then of the first two, let the engine pass most positions quickly.
        first = _class(set().union(*(form.first(form.units[0]) for form in every)))
        starts = "|".join(sorted(set().union(*(form.starts() for form in every))))
        self.full = re.compile(f"(?={first})(?={starts})(?:{self._branches})")
        self.candidates = re.compile(f"(?={first})(?:(?={starts})|(?=(?s:.)\\Z))")  # where a match could begin
        plain_first = _class(set().union(*(form.first(form.units[0], plain=True) for form in every)))
        self.plain = re.compile(f"(?={plain_first})(?:" + "|".join(
            f"(?P<s{index}>{'|'.join(form.pattern(plain=True) for form in value_forms)})"
            for index, value_forms in enumerate(by_value)) + ")")

    @property
    def partial(self) -> regex.Pattern[str]:
        with self._lock:
            if self._partial is None:
                self._partial = regex.compile(self._branches)
            return self._partial

    def pattern(self, text: str) -> re.Pattern[str] | None:
        return self.full if _ESCAPES.search(text) else self.plain

    def name(self, match: re.Match[str] | regex.Match[str]) -> str:
        return self.names[int(match.lastgroup[1:])]  # type: ignore[index]


def _longest(value: str) -> int:
    """A bound on the length of a match of a form of `value`: each unit written its longest way
    (an escape with 4 backslashes: `\\\\\\\\u0041`, or one per UTF-8 byte), the longest line break between."""
    data = value.encode("utf-8", "surrogatepass")
    as_text = sum(9 if ord(char) < 0x80 else max(7 * len(char.encode("utf-8", "surrogatepass")), 18) for char in value)
    b64_units = -(-len(data) // 3) * 4 + 3
    return max(as_text + (len(value) - 1) * _BREAK_MAX, 2 * len(data) * (1 + _BREAK_MAX),
               b64_units * (9 + _BREAK_MAX))


Span = tuple[int, int, str]


class Redactor:
    """Replaces secrets in text and in JSON-like values; `update` adds (never forgets) values, so a
    rotated secret stays redacted."""

    def __init__(self, secrets: Mapping[str, str] | None = None) -> None:
        self._values: dict[str, str] = {}  # value -> name
        self._state = _State({})
        self._lock = threading.Lock()
        if secrets:
            self.update(secrets)

    def update(self, secrets: Mapping[str, str]) -> None:
        with self._lock:
            values = dict(self._values)
            for name, value in secrets.items():
                if value and value not in values:
                    values[value] = name
            if values == self._values:
                return
            state = _State(values)
            self._values = values
            self._state = state

    def __bool__(self) -> bool:
        return self._state.full is not None

    @property
    def names(self) -> list[str]:
        return sorted(set(self._values.values()))

    def contains(self, text: str) -> bool:
        pattern = self._state.pattern(text)
        return pattern is not None and pattern.search(text) is not None

    def spans(self, text: str, *, wrapped: bool = False) -> list[Span]:
        """Where secrets are in `text`: sorted, non-overlapping (start, end, name). `wrapped` (console
        output): also where a secret is once the text's line breaks are taken out, for a console
        logger wraps lines anywhere, inside an escape too."""
        state = self._state
        pattern = state.pattern(text)
        if pattern is None:
            return []
        if wrapped and "\n" in text:
            found = self.spans(text) if state.multiline else []  # (see StreamRedactor.feed)
            view = _Unwrapped(text)
            return _merged(found, [view.span(match.start(), match.end(), state.name(match))
                                   for match in state.full.finditer(view.text)])  # type: ignore[union-attr]
        return [(match.start(), match.end(), state.name(match)) for match in pattern.finditer(text)]

    def redact_text(self, text: str, *, wrapped: bool = False) -> str:
        """`text` with every secret replaced (`wrapped`: see `spans`)."""
        state = self._state
        if wrapped:
            return _replaced(text, self.spans(text, wrapped=True))
        pattern = state.pattern(text)
        if pattern is None:
            return text
        return pattern.sub(lambda match: placeholder(state.name(match)), text)

    def redact(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string (keys too) redacted; other values as they are.
        In a list, the texts of adjacent items (strings, or the `text` of objects) are scanned joined."""
        if self._state.full is None:
            return value
        return self._redact(value)

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {self._redact(key) if isinstance(key, str) else key: self._redact(item)
                    for key, item in value.items()}
        if isinstance(value, list | tuple):
            return self._redact_items(value)
        return value

    def _redact_items(self, items: list[Any] | tuple[Any, ...]) -> list[Any]:
        texts = {index: text for index, item in enumerate(items) if (text := _text_of(item)) is not None}
        if len(texts) < 2:
            return [self._redact(item) for item in items]
        redacted = dict(zip(texts, _redact_joined(self, list(texts.values())), strict=True))
        out = []
        for index, item in enumerate(items):
            if index not in redacted:
                out.append(self._redact(item))
            elif isinstance(item, str):
                out.append(redacted[index])
            else:  # an object with a text: the text as redacted with its neighbours, the rest on its own
                out.append({self._redact(key) if isinstance(key, str) else key:
                            redacted[index] if key == "text" else self._redact(field) for key, field in item.items()})
        return out


def _text_of(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(text := item.get("text"), str):
        return text
    return None


def _redact_joined(redactor: Redactor, texts: list[str]) -> list[str]:
    """The texts of adjacent items, redacted as one text: a secret that spans items is replaced by one
    placeholder in the item where it starts, and its pieces in the items after are removed."""
    ends = list(itertools.accumulate(len(text) for text in texts))
    joined = "".join(texts)
    pieces: list[list[str]] = [[] for _ in texts]
    item = position = 0
    for start, end, name in [*redactor.spans(joined), (len(joined), len(joined), "")]:
        while position < start:  # the text before this secret, to the items it belongs to
            while ends[item] <= position:
                item += 1
            stop = min(start, ends[item])
            pieces[item].append(joined[position:stop])
            position = stop
        if not name:
            break
        while ends[item] <= start:
            item += 1
        pieces[item].append(placeholder(name))
        position = end
    return ["".join(parts) for parts in pieces]


def _replaced(text: str, spans: list[Span]) -> str:
    out, position = [], 0
    for start, end, name in spans:
        out += [text[position:start], placeholder(name)]
        position = end
    out.append(text[position:])
    return "".join(out)


def _merged(*found: list[Span]) -> list[Span]:
    """Spans from several scans, sorted; overlapping ones become one (named by the first)."""
    merged: list[Span] = []
    for span in sorted(itertools.chain(*found)):
        if merged and span[0] < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(span[1], merged[-1][1]), merged[-1][2])
        else:
            merged.append(span)
    return merged


_LINE_BREAK = re.compile(r"[ \t]*\r?\n[ \t]*")  # a break a console logger inserts, with its padding


class _Unwrapped:
    """A text with its line breaks (and the padding around them) taken out, and the way back."""

    def __init__(self, original: str) -> None:
        self._joined_starts: list[int] = []
        self._original_starts: list[int] = []
        pieces: list[str] = []
        position = joined_length = 0
        for run in [*_LINE_BREAK.finditer(original), None]:
            end = len(original) if run is None else run.start()
            self._joined_starts.append(joined_length)
            self._original_starts.append(position)
            pieces.append(original[position:end])
            joined_length += end - position
            position = len(original) if run is None else run.end()
        self.text = "".join(pieces)

    def original(self, index: int) -> int:
        segment = bisect.bisect_right(self._joined_starts, index) - 1
        return self._original_starts[segment] + index - self._joined_starts[segment]

    def span(self, start: int, end: int, name: str) -> Span:
        return self.original(start), self.original(end - 1) + 1, name


class StreamRedactor:
    """Redacts text that arrives in pieces: a secret split between pieces is still found.

    A tail that could be the beginning of a secret form (or a secret that could go on) is held back
    until the next piece; `flush` (the writer went quiet) writes all but a tail that is the
    beginning of a secret form; `final` (the end of the stream, or of a unit no secret straddles)
    writes everything. At most `MAX_HELD` characters are held.
    """

    def __init__(self, redactor: Redactor, *, wrapped: bool = False) -> None:
        self._redactor = redactor
        self._wrapped = wrapped  # console output: see `Redactor.spans`
        self._pending = ""

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def feed(self, text: str, *, final: bool = False, flush: bool = False) -> str:
        buffer = self._pending + text
        state = self._redactor._state
        if final or state.full is None:
            self._pending = ""
            return self._redactor.redact_text(buffer, wrapped=self._wrapped)
        if self._wrapped and "\n" in buffer:
            # What is found in the text as it is is found without its line breaks too, unless a
            # secret has line breaks of its own.
            spans, cut = _scan(state, buffer, flush) if state.multiline else ([], len(buffer))
            view = _Unwrapped(buffer)
            view_spans, view_cut = _scan(state, view.text, flush)
            spans = _merged(spans, [view.span(*span) for span in view_spans])
            cut = min(cut, view.original(view_cut))
        else:
            spans, cut = _scan(state, buffer, flush)
        for start, end, _ in reversed(spans):  # a secret that reaches into what is held back is held whole
            if end > cut:
                cut = min(cut, start)
        if len(buffer) - cut > MAX_HELD:  # beyond the bound, the oldest text goes out (a secret in it, whole)
            cut = len(buffer) - MAX_HELD
            cut = max([cut, *(end for start, end, _ in spans if start < cut)])
        self._pending = buffer[cut:]
        return _replaced(buffer[:cut], [span for span in spans if span[1] <= cut])


def _scan(state: _State, text: str, flush: bool) -> tuple[list[Span], int]:
    """The secrets in `text`, and where the tail that could still become one (or go on) begins.

    A secret's beginning is no longer than `state.longest`, so only that tail is held back: from
    where a match could begin (its first two characters fit). On `flush` it is exact: the slower
    engine that can tell a match cut short by the end is asked at each such place."""
    pattern = state.pattern(text)
    assert pattern is not None and state.candidates is not None
    spans = [(match.start(), match.end(), state.name(match)) for match in pattern.finditer(text)]
    if spans and spans[-1][1] == len(text) and not flush:  # it might go on
        return spans[:-1], spans[-1][0]
    start = max(spans[-1][1] if spans else 0, len(text) - state.longest)
    if not flush:
        candidate = state.candidates.search(text, start)
        return spans, len(text) if candidate is None else candidate.start()
    partial = state.partial
    for candidate in state.candidates.finditer(text, start):
        match = partial.match(text, candidate.start(), partial=True)
        if match is not None and match.partial:
            return spans, candidate.start()
    return spans, len(text)
