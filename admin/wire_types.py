"""Parameter and field types that accept exactly what the OpenAPI document promises.

pydantic's lax mode (and Python's ``int()`` under it) reads far more than the schema says:
``page=0.0``, ``+1``, `` 1``, ``1_000`` as integers, ``yes``/``on``/``1`` as booleans, a UUID
without hyphens, in braces or as ``urn:uuid:``. A client or a checker (schemathesis) that reads
the schema sends only what it allows and expects the rest refused, so these types refuse it,
with a one-line 400 from ``admin.problems``; the schema they produce is unchanged (``integer``,
``boolean``, ``string``/``uuid``).

- An integer in a query string is written as JSON writes one (RFC 8259 §6): an optional
  ``-``, then ``0`` or a digit 1-9 and more ASCII digits; the route's bounds then apply.
- A boolean in a query string is ``true`` or ``false``, as OpenAPI's form style serializes
  one; in a JSON body it is a JSON boolean (``StrictBool``), not ``"true"`` or ``1``.
- A UUID is the 8-4-4-4-12 hex form of RFC 9562 §4 (either case: §4 reads hex digits
  case-insensitively).

Pure: no I/O, nothing from ``broker/``.
"""

import re
from typing import Annotated, Any
from uuid import UUID

from pydantic import BeforeValidator

_JSON_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
UUID_PATTERN = "[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}"
_UUID_TEXT = re.compile(UUID_PATTERN)
# A longer integer is far past every route's maximum; int() of more digits costs time (and
# Python refuses past 4,300), so it is refused before it is converted.
_MAX_DIGITS = 30


def _query_integer(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # a default, or a value given in Python: the bounds still apply
    if not _JSON_INTEGER.fullmatch(value):
        raise ValueError(
            f"{value[:40]!r} is not an integer: write it in ASCII digits, as JSON does "
            "(no '+', spaces, '_', '.', exponent or leading zeros)"
        )
    if len(value.lstrip("-")) > _MAX_DIGITS:
        raise ValueError(f"{value[:40]}... is out of range (more than {_MAX_DIGITS} digits)")
    return int(value)


def _query_boolean(value: Any) -> Any:
    if value in ("true", "false"):
        return value == "true"
    if isinstance(value, bool):
        return value
    raise ValueError(f"{str(value)[:40]!r} is not a boolean: write true or false")


def _uuid_text(value: Any) -> Any:
    if isinstance(value, str) and not _UUID_TEXT.fullmatch(value):
        raise ValueError(
            f"{value[:40]!r} is not a UUID: write it as 8-4-4-4-12 hex digits with hyphens"
        )
    return value  # a UUID object (a response built from a record) passes as it is


# Put after the route's Query(...) in Annotated[...]: pydantic applies metadata in order, and
# bounds given after a validator are left out of the schema's minimum/maximum (the document
# would then show non-standard 'ge'/'le' keywords that no client or checker reads).
JSON_INTEGER = BeforeValidator(_query_integer)
JSON_BOOLEAN = BeforeValidator(_query_boolean)
Uuid = Annotated[UUID, BeforeValidator(_uuid_text)]
