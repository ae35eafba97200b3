"""Request body parsers: DRF's JSON parser with a bound on nesting.

Python's ``json`` recurses once per level of nesting, so a body of a few
thousand ``[`` (well under the 1 MiB body limit) raises ``RecursionError``,
which no handler turns into a 400. :class:`BoundedJSONParser` refuses a body
nested deeper than :data:`MAX_JSON_DEPTH` before ``json`` sees it, with a scan
that is linear in the body and runs in C (regular expressions, ``accumulate``).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Mapping
from itertools import accumulate
from typing import IO, Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils.json import strict_constant

# Our bodies are flat objects; 64 levels leaves room for any client's wrapping.
MAX_JSON_DEPTH = 64
DEPTH_MESSAGE = f"Request body nested too deeply: at most {MAX_JSON_DEPTH} levels"

# A JSON string, escapes included: brackets inside one are not structure.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class NestedTooDeeply(ParseError):
    """A 400 with its own line (errors.py names plain ``ParseError`` "Malformed request body")."""

    default_detail = DEPTH_MESSAGE


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``text`` opens more than ``limit`` arrays or objects inside each other.

    Exact for valid JSON; for invalid JSON (an unterminated string) it may
    over-count, and such a body is a 400 either way.
    """
    # Most bodies hold a handful of brackets: nothing to scan.
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


class BoundedJSONParser(parsers.JSONParser):
    """DRF's ``JSONParser``, refusing bodies nested deeper than :data:`MAX_JSON_DEPTH`."""

    def parse(
        self, stream: IO[bytes], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.decode(stream.read(), encoding)
        except (ValueError, LookupError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        if json_depth_exceeds(text):
            raise NestedTooDeeply
        parse_constant = strict_constant if self.strict else None
        try:
            return json.loads(text, parse_constant=parse_constant)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
