"""The redaction engine: finds secret values in text, plain or encoded, and replaces each with
`[REDACTED:NAME]`. A leaf module: it knows nothing of the gateway.

One pattern per secret form is built (not a list of spellings), so every mix of the encodings
below is found with one linear scan:

- the value itself, each character of which may also be written as a JSON or Python escape
  (`\\u00e9`, `\\u00E9`, `\\/`, `\\"`, `\\xe9`, UTF-8 `\\xc3\\xa9`, with the backslash doubled when
  the text was escaped again), or as percent-encoded UTF-8 bytes in any case (`%C3%a9`), or `+` for
  a space; some characters encoded and others not, too;
- its base64, standard or URL-safe (or a mix), padded or not, and the stretch of it that lies
  inside a longer base64 text at each of the three bit alignments (`Basic base64(user:secret)`,
  a PEM or MIME body); each base64 character may be percent- or JSON-escaped as above;
- its UTF-8 bytes in hex, upper, lower or mixed case.

Between any two characters of any form, one line break (`\\n` or `\\r\\n`, as a character or as a
JSON escape) with spaces or tabs around it is allowed: base64 wrapped at 64 or 76 columns, a
console logger wrapping a long line. A secret split between adjacent items of a list (the text
content items of an MCP result) is found by scanning their texts joined; one split between the
pieces of a stream is found by `StreamRedactor`, which holds back a tail that could begin one.

Out of reach by design (no scan can see them): a value the sender transformed in a way that is not
an encoding (reversed, encrypted, hashed, compressed, split across fields or messages, one
character at a time on request).
"""

from __future__ import annotations

import base64
import itertools
import re
import threading
from collections.abc import Mapping
from typing import Any

import regex

MIN_FRAGMENT = 8  # shortest base64 stretch looked for inside a longer base64 text
MAX_HELD = 65536  # characters a stream holds back at most
_BACKSLASHES = r"\\{1,8}"  # an escape's backslash: one as written, more when escaped again (JSON in JSON)
_PAD = r"[ \t]{0,128}"  # padding a console logger puts around the line breaks it inserts (bounded: see MAX_HELD)
_BREAK = rf"(?:{_PAD}(?:\r?\n|(?:{_BACKSLASHES}r)?{_BACKSLASHES}n){_PAD})?"
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


def _b64_written(char: str) -> str:
    other = _OTHER_ALPHABET.get(char)
    return _written(char) if other is None else f"(?:{_written(char)}|{_written(other)})"


def _b64_plain(char: str) -> str:
    other = _OTHER_ALPHABET.get(char)
    return regex.escape(char) if other is None else f"[{regex.escape(char)}{regex.escape(other)}]"


def form_patterns(value: str, *, plain: bool = False) -> list[str]:
    """Patterns of the forms of `value` that are looked for (see the module's docstring); `plain`: only
    as they are written in a text with no escape, percent sign or line break (a faster pattern)."""
    written, b64, joined = (regex.escape, _b64_plain, "".join) if plain else (_written, _b64_written, _BREAK.join)
    data = value.encode("utf-8", "surrogatepass")
    found = [joined([written(char) for char in value]), joined([_hex_digits(byte, 2) for byte in data])]
    for offset in range(3):
        shifted = base64.b64encode(b"\0" * offset + data).decode("ascii")
        start = -(-8 * offset // 6)
        core = shifted[start:(8 * (offset + len(data))) // 6]  # the characters that depend on the value alone
        if offset == 0:
            tail = shifted[len(core):].rstrip("=")  # the last character, when the value ends the data
            pattern = joined([b64(char) for char in core])
            if tail:
                pattern += f"(?:{joined(['', b64(tail)])}(?:{joined(['', written('=')])}){{0,2}})?"
            found.append(pattern)
        elif len(core) >= MIN_FRAGMENT:
            found.append(joined([b64(char) for char in core]))
    return found


def _first_characters(value: str) -> set[str]:
    """Every character a match of a form of `value` can begin with."""
    data = value.encode("utf-8", "surrogatepass")
    first = {value[0], "%", "\\", *f"{data[0]:02x}"[0], *f"{data[0]:02X}"[0]}
    if value[0] == " ":
        first.add("+")
    for offset in range(3):
        char = base64.b64encode(b"\0" * offset + data).decode("ascii")[-(-8 * offset // 6)]
        first |= {char, _OTHER_ALPHABET.get(char, char)}
    return first


_ESCAPES = re.compile(r"[%\\\r\n+]")  # a text without these can only hold the plain forms


class _State:
    """Compiled once per change of the secrets; swapped whole, so readers in other threads see old or new.

    `plain` serves texts with no escape, percent sign or line break (most strings), `full` the others
    (the standard library's engine, faster here); `partial` (the `regex` engine) also tells whether the
    end of a text could be the beginning of a secret, for streams."""

    __slots__ = ("full", "names", "partial", "plain")

    def __init__(self, values: dict[str, str]) -> None:
        # Longer secrets first, so a secret inside another is not what names the match.
        ordered = sorted(values.items(), key=lambda item: (-len(item[0]), item[0]))
        self.names = [name for _, name in ordered]
        self.plain = self.full = self.partial = None
        if not ordered:
            return
        branches = "|".join(f"(?P<s{index}>{'|'.join(form_patterns(value))})"
                            for index, (value, _) in enumerate(ordered))
        first = set().union(*(_first_characters(value) for value, _ in ordered))
        # Starting with the set of first characters lets the engine skip most positions quickly.
        self.full = re.compile(f"(?=[{''.join(regex.escape(char) for char in sorted(first))}])(?:{branches})")
        self.partial = regex.compile(branches)
        self.plain = re.compile("|".join(f"(?P<s{index}>{'|'.join(form_patterns(value, plain=True))})"
                                         for index, (value, _) in enumerate(ordered)))

    def pattern(self, text: str) -> re.Pattern[str] | None:
        return self.full if _ESCAPES.search(text) else self.plain

    def name(self, match: re.Match[str] | regex.Match[str]) -> str:
        return self.names[int(match.lastgroup[1:])]  # type: ignore[index]


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

    def spans(self, text: str) -> list[Span]:
        """Where secrets are in `text`: sorted, non-overlapping (start, end, name)."""
        state = self._state
        pattern = state.pattern(text)
        if pattern is None:
            return []
        return [(match.start(), match.end(), state.name(match)) for match in pattern.finditer(text)]

    def redact_text(self, text: str) -> str:
        state = self._state
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


class StreamRedactor:
    """Redacts text that arrives in pieces: a secret split between pieces is still found.

    A tail that could be the beginning of a secret form (or a secret that could go on) is held back
    until the next piece; `flush` (the writer went quiet) writes all but a tail that could still
    become a secret; `final` (the end of the stream, or of a unit no secret straddles) writes
    everything. At most `MAX_HELD` characters are held.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._pending = ""

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def feed(self, text: str, *, final: bool = False, flush: bool = False) -> str:
        buffer = self._pending + text
        state = self._redactor._state
        if final or state.partial is None:
            self._pending = ""
            return self._redactor.redact_text(buffer)
        out: list[str] = []
        position, cut = 0, len(buffer)
        for match in state.partial.finditer(buffer, partial=True):
            if match.partial or (match.end() == len(buffer) and not flush):
                cut = match.start()
                break
            out += [buffer[position:match.start()], placeholder(state.name(match))]
            position = match.end()
        if len(buffer) - cut > MAX_HELD:  # beyond the bound, the oldest text goes out as it is
            cut = len(buffer) - MAX_HELD
        self._pending = buffer[cut:]
        out.append(buffer[position:cut])
        return "".join(out)
