"""Render URLs and errors without passwords: nothing we print may leak a credential."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote_plus

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

MASK = "***"
# user:password@ in anything that looks like a URL, for strings SQLAlchemy cannot parse. The
# password runs to the last @ of the word: an unescaped @ in it must not show the rest.
_USERINFO = re.compile(r"(?P<scheme>[\w+.-]+://)(?P<user>[^:/@\s]*):(?P<password>\S*)@")
# user:password@host with the scheme forgotten: everything up to the last @ may be the password.
_BARE_USERINFO = re.compile(r"^(?P<user>[^:/@\s]*):(?P<password>\S*)@")
# Keys whose value is a secret, in a URL's query string, a libpq string or a dict's repr:
# password, passwd, pwd, sslpassword; libpq's passfile is a path, masked all the same (one path
# too many is better than one secret). sslkey, sslcert and sslrootcert are paths and stay.
_SECRET_KEY = r"[\w.-]*(?:pass|pwd|secret|token|credential)[\w.-]*"
# key=value (a query string, a libpq string): the value runs to & ; , ) or a space, or is quoted.
_SECRET_ASSIGNMENT = re.compile(
    rf"(?P<key>\b{_SECRET_KEY})(?P<eq>\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^\s&;,)'\"]*)",
    re.IGNORECASE,
)
# 'key': 'value' in the repr of a dict of connect arguments.
_SECRET_ITEM = re.compile(
    rf"(?P<key>['\"]{_SECRET_KEY}['\"])(?P<eq>\s*:\s*)(?P<value>'(?:[^'\\]|\\.)*'|\"[^\"]*\")",
    re.IGNORECASE,
)
_PLACEHOLDER = "fastapimigratemaskedvalue"


def is_secret_key(key: str) -> bool:
    """Whether a query-string or connect-argument key holds a secret (``password``...)."""
    return re.fullmatch(_SECRET_KEY, key, re.IGNORECASE) is not None


def mask_secrets(text: str) -> str:
    """``text`` with whatever looks like a secret masked: the password of a ``user:password@``
    in a URL, the value of ``password=``, ``sslpassword=``... (query strings, libpq strings)
    and of ``'password': ...`` (a dict's repr). For values echoed back that may not be URLs."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _SECRET_ASSIGNMENT.sub(lambda m: f"{m['key']}{m['eq']}{MASK}", text)
    return _SECRET_ITEM.sub(lambda m: f"{m['key']}{m['eq']}'{MASK}'", text)


def mask_url(url: str | URL | None) -> str:
    """The URL as a string, its password replaced by ``***``."""
    if url is None:
        return "<no URL>"
    if isinstance(url, URL):
        return _render_masked(url)
    raw = _split_raw(url)
    if raw is not None and has_unescaped_at(url):  # SQLAlchemy would show its tail as the host
        scheme, user, _password, after = raw
        return mask_secrets(f"{scheme}://{user}:{MASK}@{after}")
    try:
        return _render_masked(make_url(url))
    except (ArgumentError, ValueError, TypeError):
        if "://" not in url:
            url = _BARE_USERINFO.sub(lambda m: f"{m['user']}:{MASK}@", url)
        return mask_secrets(url)


def _render_masked(url: URL) -> str:
    """SQLAlchemy's rendering without the password, secret query values masked too."""
    secret = {key: _PLACEHOLDER for key in url.query if is_secret_key(key)}
    shown = url.update_query_dict(secret) if secret else url
    return shown.render_as_string(hide_password=True).replace(_PLACEHOLDER, MASK)


def _split_raw(url: str) -> tuple[str, str, str, str] | None:
    """Scheme, user, password and the rest of a URL string typed with its password unescaped.

    The password runs to the *last* ``@``: it may hold any character, ``@ / ? :`` and Unicode
    spaces included, and hiding a host by mistake is better than showing a password's tail.
    """
    scheme, sep, rest = url.partition("://")
    userinfo, at, after = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return None
    user, _, password = userinfo.partition(":")
    return scheme, user, password, after


def has_unescaped_at(url: str) -> bool:
    """Whether the password seems to hold a raw ``@`` (SQLAlchemy splits at the first one)."""
    if "://" not in url:
        return False
    return url.split("://", 1)[1].split("?", 1)[0].count("@") > 1


def passwords_of(urls: Iterable[str | URL | None]) -> list[str]:
    """The passwords in these URLs, raw and as they appear %-encoded in a URL string."""
    found: list[str] = []
    for url in urls:
        if url is None:
            continue
        raw = str(url) if not isinstance(url, URL) else url.render_as_string(hide_password=False)
        try:
            parsed = make_url(url) if not isinstance(url, URL) else url
            if parsed.password:
                found.append(str(parsed.password))
            for key, value in parsed.query.items():
                if is_secret_key(key):
                    found += [value] if isinstance(value, str) else list(value)
        except (ArgumentError, ValueError, TypeError):
            pass
        for assignment in _SECRET_ASSIGNMENT.finditer(raw):
            value = assignment["value"]
            if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) > 1:
                value = value[1:-1]
            found += [value, unquote_plus(value)]
        split = _split_raw(raw)
        if split is not None:
            found.append(split[2])
        match = _USERINFO.search(raw) if "://" in raw else _BARE_USERINFO.search(raw)
        if match and match["password"]:
            found.append(match["password"])
    # Longest first, so a password that contains another is replaced whole.
    return sorted({p for p in found if p}, key=len, reverse=True)


def redact(text: str, urls: Iterable[str | URL | None]) -> str:
    """``text`` with every password of ``urls`` (and whatever looks like a secret) masked."""
    for password in passwords_of(urls):
        text = text.replace(password, MASK)
    return mask_secrets(text)


def error_line(error: BaseException, urls: Iterable[str | URL | None] = ()) -> str:
    """The first line of ``type: message``, every password of ``urls`` masked: the one way an
    error is quoted in our messages and logs. A DBAPI error keeps SQLAlchemy's type (stable
    across drivers) with the driver's own message (the wrapper adds the statement and a link
    on further lines)."""
    text = str(getattr(error, "orig", None) or error).strip()
    line = text.splitlines()[0] if text else ""
    return redact(f"{type(error).__name__}: {line}" if line else type(error).__name__, urls)
