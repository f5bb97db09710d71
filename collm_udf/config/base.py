"""What every conf section shares: the error type, identifier checks and the field helper (no other imports,
so the section modules import it without a cycle)."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """A conf file or value is invalid; the message names the key path and the offending value."""


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_identifier(value: str, what: str) -> str:
    """A catalog/schema/table name part: letters, digits and underscores only (never quoted into SQL)."""
    if not isinstance(value, str) or not _IDENT.match(value):
        raise ConfigError(f"{what}: {value!r} is not a valid identifier (letters, digits, underscore)")
    return value


def check_table_name(value: str, what: str) -> str:
    """A table reference of one to three identifier parts: name, schema.name or catalog.schema.name."""
    parts = value.split(".") if isinstance(value, str) else [value]
    if not 1 <= len(parts) <= 3:
        raise ConfigError(f"{what}: {value!r} must be name, schema.name or catalog.schema.name")
    for p in parts:
        check_identifier(p, what)
    return value


def help_field(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING):
    kw: dict = {"metadata": {"help": text}}
    if default is not dataclasses.MISSING:
        kw["default"] = default
    if factory is not dataclasses.MISSING:
        kw["default_factory"] = factory
    return field(**kw)
