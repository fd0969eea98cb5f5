"""``# fastapi-migrate: allow <rule> -- <reason>`` comments, read from a revision file's text.

A suppression applies to the whole revision file. The reason is required: a comment without
one (or naming no known rule) is itself a finding, so an ``allow`` never hides a mistake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ALLOW = re.compile(r"#\s*fastapi-migrate:\s*allow\b(.*)$")
_BODY = re.compile(r"^\s*([\w-]+)?\s*(?:--\s*(.*?))?\s*$")


@dataclass
class Suppressions:
    """The rules a revision file allows (rule -> reason), and the comments that are wrong."""

    allowed: dict[str, str] = field(default_factory=dict)
    wrong: list[tuple[int, str, str]] = field(default_factory=list)  # (line, rule, problem)


def read_suppressions(text: str, known: set[str]) -> Suppressions:
    """The ``allow`` comments of one revision file."""
    found = Suppressions()
    if "fastapi-migrate:" not in text:
        return found
    for number, line in enumerate(text.splitlines(), start=1):
        m = _ALLOW.search(line)
        if m is None:
            continue
        body = _BODY.match(m.group(1))
        rule = (body.group(1) or "") if body else ""
        reason = (body.group(2) or "") if body else ""
        if rule not in known:
            found.wrong.append((number, "unknown-rule", f"`allow {rule or '?'}` names no rule"))
        elif not reason:
            found.wrong.append(
                (number, "suppression-without-reason", f"`allow {rule}` gives no reason")
            )
        else:
            found.allowed[rule] = reason
    return found
