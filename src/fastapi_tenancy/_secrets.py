"""The one way a secret is kept out of logs, error messages and the terminal.

Two layers, because a driver or a library may echo a URL in any shape:

* the passwords of the URLs the caller knows (`url_secrets`) are masked wherever they appear,
  in every spelling a message may use: decoded, percent-encoded (either case, ``quote`` or
  ``quote_plus``), as the user wrote it, and as ``repr`` escapes it;
* whatever still looks like a credential is masked by its shape: the password of any
  ``scheme://user:password@`` in the text, and any ``password=``/``passwd=``/``pwd=`` value (a URL's
  query string or a libpq-style DSN).

`redact_url` renders one URL for a message; `scrub` masks a whole text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote

from sqlalchemy.engine import URL, make_url

__all__ = ["MASK", "mask", "redact_url", "scrub", "url_secrets"]

MASK = "***"

# Query-string or DSN keys whose value is a password.
_SECRET_KEYS = frozenset({"password", "passwd", "pwd"})

# ``scheme://user:password@``: the password runs to the last ``@`` before a blank or a quote, so
# an unencoded ``@`` inside it is masked too (masking a few characters more is the safe side).
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"<>]*:)[^\s'\"<>]*@")
_KEY_VALUE = re.compile(r"(?P<head>\b(?:password|passwd|pwd)=)[^&;\s'\"<>]*", re.IGNORECASE)
# The password as the user wrote it in a URL string (SQLAlchemy's own grammar for it).
_PERCENT = re.compile(r"%[0-9A-F]{2}")
_RAW_PASSWORD = re.compile(r"^[\w+.-]+://[^:/]*:(?P<password>[^@]*)@")


def redact_url(url: str | URL) -> str:
    """``url`` with its password and any password in its query masked, safe for a message."""
    try:
        parsed = make_url(url)
    except Exception:  # an unparsable URL may itself hold a secret
        return "<unparsable URL>"
    hidden = {key: MASK for key in parsed.query if key.lower() in _SECRET_KEYS}
    if hidden:
        parsed = parsed.update_query_dict(hidden)
    rendered = parsed.render_as_string(hide_password=True)
    return rendered.replace(quote(MASK, safe=""), MASK)


def url_secrets(urls: Iterable[str | URL | None]) -> set[str]:
    """The passwords in ``urls``, each in every spelling a message may carry it.

    An unparsable URL is a secret as a whole: nothing tells which part of it is the password.
    """
    secrets: set[str] = set()
    for url in urls:
        if not url:
            continue
        try:
            parsed = make_url(url)
        except Exception:
            secrets.add(str(url))
            continue
        values = [value for key, value in parsed.query.items() if key.lower() in _SECRET_KEYS]
        if parsed.password:
            values.append(str(parsed.password))
        raw = _RAW_PASSWORD.match(url) if isinstance(url, str) else None
        if raw is not None and raw["password"]:
            values.append(raw["password"])
        for value in values:
            for item in value if isinstance(value, tuple) else (value,):
                secrets |= _spellings(str(item))
    secrets.discard("")
    return secrets


def mask(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` and every credential-shaped part replaced by ``***``."""
    # Longest first: a secret that contains another is masked whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _USERINFO.sub(lambda match: f"{match['head']}{MASK}@", text)
    return _KEY_VALUE.sub(lambda match: f"{match['head']}{MASK}", text)


def scrub(text: str, urls: Iterable[str | URL | None] = ()) -> str:
    """``text`` with the password of every URL in ``urls`` (and any other credential) masked."""
    return mask(text, url_secrets(urls))


def _spellings(secret: str) -> set[str]:
    forms = {
        secret,
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        unquote(secret),
        repr(secret)[1:-1],
        # SQLAlchemy's rendering of a URL escapes fewer characters than ``quote``.
        _rendered(secret),
    }
    # Percent-encoding is case-insensitive: a message may spell ``%2F`` as ``%2f``.
    forms |= {_PERCENT.sub(lambda match: match[0].lower(), form) for form in forms}
    return {form for form in forms if form}


def _rendered(password: str) -> str:
    url = URL.create("x", username="u", password=password, host="h")
    return url.render_as_string(hide_password=False)[len("x://u:") : -len("@h")]
