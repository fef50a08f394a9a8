"""Protobuf -> JSON helpers every upstream's `convert.py` shares."""

from __future__ import annotations


def enum_name(prefix: str, name: str) -> str:
    """`PLAN_PREMIUM` -> `premium`; the unspecified value -> ``."""
    short = name.removeprefix(prefix).lower()
    return "" if short == "unspecified" else short
