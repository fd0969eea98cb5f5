"""SQL text as the rules read it: split into statements, comments and literals dropped,
identifiers unquoted, upper case, one space between words.

A small scanner rather than a parser: Alembic renders one statement form per operation, and raw
``op.execute`` SQL needs only the head of each statement (which command, which table, which
clauses). It knows PostgreSQL's dollar quotes and MySQL's backticks.
"""

from __future__ import annotations

import re

# Where the scanner has work (comments, literals, quoted names, dollar quotes, the end of a
# statement): the text between two of them is copied as it is.
_SPECIAL = re.compile(r"--|/\*|['\"`;]|\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$")


def statements(sql: str) -> list[str]:
    """The statements of ``sql``, each normalized; empty ones dropped."""
    found: list[str] = []
    out: list[str] = []
    i, n = 0, len(sql)
    while (m := _SPECIAL.search(sql, i)) is not None:
        start, token = m.start(), m.group()
        out.append(sql[i:start])
        if token == "--":
            end = sql.find("\n", start)
            i = n if end < 0 else end
            out.append(" ")
        elif token == "/*":
            end = sql.find("*/", start + 2)
            i = n if end < 0 else end + 2
            out.append(" ")
        elif token == "'":
            i = _skip_quoted(sql, start, "'")
            out.append(" '' ")
        elif token in '"`':
            i = _skip_quoted(sql, start, token)
            out.append(sql[start + 1 : i - 1].replace(token * 2, token).replace(" ", "_"))
        elif token == ";":
            found.append("".join(out))
            out = []
            i = start + 1
        else:  # a dollar quote: $$ or $tag$
            end = sql.find(token, m.end())
            i = n if end < 0 else end + len(token)
            out.append(" '' ")
    out.append(sql[i:])
    found.append("".join(out))
    return [s for s in (_normalize(text) for text in found) if s]


def _skip_quoted(sql: str, start: int, quote: str) -> int:
    """The index just past the literal or identifier that opens at ``start``."""
    i = start + 1
    while True:
        end = sql.find(quote, i)
        if end < 0:
            return len(sql)
        if sql.startswith(quote * 2, end):
            i = end + 2
            continue
        return end + 1


def _normalize(text: str) -> str:
    text = text.replace("(", " ( ").replace(")", " ) ").replace(",", " , ")
    return " ".join(text.upper().split())


def split_top_level(text: str) -> list[str]:
    """``text`` split on the commas outside parentheses (the actions of one ALTER TABLE)."""
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def bare_name(name: str) -> str:
    """A table's name without its schema, for matching."""
    return name.rsplit(".", 1)[-1].upper()
