"""Who may use the console: analysts' tokens, login sessions, CSRF tokens.

The tokens come from ``FRAUDSTREAM_CONSOLE_TOKENS_FILE``: one ``name:token`` line per
analyst (blank lines and ``#`` comments ignored). A token is checked against every
configured one in constant time (``hmac.compare_digest`` over SHA-256 digests, no early
exit), and is never shown: error messages name the line, not its content.

A browser logs in once with its token and then carries a random session id in an HttpOnly,
SameSite=Strict cookie; requests that change something and authenticate by cookie must
also send the session's CSRF token in the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from stream_app.errors import ConfigError

TOKENS_VAR = "FRAUDSTREAM_CONSOLE_TOKENS_FILE"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MIN_TOKEN_CHARS = 16
SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 1000


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Analysts:
    """The configured analysts and their tokens (only digests are kept)."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self._digests = [(name, _digest(token)) for name, token in tokens.items()]

    @classmethod
    def parse(cls, text: str) -> Analysts:
        """The analysts of a tokens file's ``text``; a bad line is a :class:`ConfigError`
        naming the line number (never the token)."""
        tokens: dict[str, str] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, colon, token = line.partition(":")
            where = f"{TOKENS_VAR}, line {number}"
            if not colon or not NAME_PATTERN.fullmatch(name):
                raise ConfigError(
                    f"{where} is not `name:token` with a name of 1 to 64 characters of "
                    "A-Z a-z 0-9 _ . @ - (starting with a letter or digit); fix that line"
                )
            if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
                raise ConfigError(
                    f"{where}: the token of {name!r} is shorter than {MIN_TOKEN_CHARS} "
                    "characters or holds white space; use a random one, e.g. from "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`"
                )
            if name in tokens:
                raise ConfigError(f"{where} repeats the analyst {name!r}; keep one line each")
            if token in tokens.values():
                raise ConfigError(f"{where}: {name!r} has another analyst's token; give each "
                                  "analyst their own")
            tokens[name] = token
        if not tokens:
            raise ConfigError(
                f"{TOKENS_VAR} names no analyst: the console refuses every request without a "
                "token, so point it at a file of `name:token` lines"
            )
        return cls(tokens)

    @property
    def names(self) -> list[str]:
        """The analysts' names, in file order."""
        return [name for name, _ in self._digests]

    def check(self, token: str) -> str | None:
        """The analyst whose token ``token`` is, else None (constant time per analyst)."""
        offered = _digest(token)
        found = None
        for name, digest in self._digests:
            if hmac.compare_digest(offered, digest):
                found = name
        return found

    def __repr__(self) -> str:
        return f"Analysts({self.names!r})"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


@dataclass(frozen=True)
class Session:
    """One logged-in browser: its analyst, CSRF token and expiry (monotonic seconds)."""

    id: str
    analyst: str
    csrf: str
    expires: float

    def csrf_ok(self, offered: str | None) -> bool:
        """Whether ``offered`` is this session's CSRF token (constant time)."""
        return offered is not None and hmac.compare_digest(offered.encode(), self.csrf.encode())


class Sessions:
    """Login sessions in memory (a restart logs everybody out), oldest dropped past a cap."""

    def __init__(
        self,
        ttl_s: float = SESSION_TTL_S,
        capacity: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._capacity = capacity
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, analyst: str) -> Session:
        """A new session of ``analyst``."""
        session = Session(
            secrets.token_urlsafe(32), analyst, secrets.token_urlsafe(32),
            self._clock() + self._ttl_s,
        )  # fmt: skip
        self._sessions[session.id] = session
        while len(self._sessions) > self._capacity:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session ``session_id`` names, else None (an expired one is dropped)."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is not None and session.expires <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def close(self, session_id: str) -> None:
        """Log a session out."""
        self._sessions.pop(session_id, None)
