"""The API's body parsers: DRF's, refusing what would otherwise be a server error.

Kept apart from ``jitportal.api``: DRF imports the parsers named in the
settings while it defines its views, so this module must not import them.
"""

from __future__ import annotations

from collections.abc import Mapping

from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError

NUL_MESSAGE = "Null characters are not allowed."
# Far deeper than any input of this API, far below Python's recursion limit.
MAX_BODY_DEPTH = 32


def body_check(data) -> None:
    """Refuse a parsed body PostgreSQL could not take, naming the top-level field.

    A NUL character makes PostgreSQL refuse the query that carries it, so it
    is refused here for every field at once, whatever type the field has.
    Iterative, so a deeply nested body cannot exhaust the stack.
    """
    pending: list[tuple[object, int, str | None]] = [(data, 0, None)]
    while pending:
        value, depth, field = pending.pop()
        if depth > MAX_BODY_DEPTH:
            raise ParseError(f"the body is nested more than {MAX_BODY_DEPTH} levels deep")
        if isinstance(value, str):
            if "\x00" in value:
                raise ValidationError({field or "non_field_errors": [NUL_MESSAGE]})
        elif isinstance(value, Mapping):
            items = value.lists() if hasattr(value, "lists") else value.items()  # a QueryDict's every value
            for key, item in items:
                if "\x00" in str(key):
                    raise ValidationError({"non_field_errors": [f"{NUL_MESSAGE} (in a field name)"]})
                pending.append((item, depth + 1, field if field is not None else str(key)))
        elif isinstance(value, list | tuple):
            pending.extend((item, depth + 1, field) for item in value)


class JSONParser(parsers.JSONParser):
    """DRF's, plus: nesting that exhausts the stack and NUL characters are a 400, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested more than {MAX_BODY_DEPTH} levels deep") from None
        body_check(data)
        return data


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        body_check(data)
        return data


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        body_check(parsed.data)
        return parsed
