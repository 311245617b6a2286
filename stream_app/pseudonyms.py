"""Pseudonymous customer and terminal ids: keyed HMACs for Redis keys, masks for output.

With ``FRAUDSTREAM_PSEUDONYM_KEY`` (best passed as ``FRAUDSTREAM_PSEUDONYM_KEY_FILE``) the
window store names a window by the :meth:`Pseudonymizer.pseudonym` of its id: the first
16 bytes of HMAC-SHA256(key, ``<kind>:<id>``) in hex, ``kind`` being ``cust`` or ``term``
(so a customer and a terminal with the same id get unrelated pseudonyms). The same key
gives the same pseudonyms in every run: replays and backtests stay deterministic.

:func:`mask_id` hides an id in printed output (the ``alerts`` command): the first
:data:`MASK_SHOWN_CHARS` characters of an id of :data:`MASK_SHOWN_FROM` characters or
more, ``…``, and the first :data:`MASK_TAG_CHARS` hex characters of its pseudonym (with
a key; that is also how its Redis key begins) or of SHA-256(``<kind>:<id>``) without one.
"""

from __future__ import annotations

import hashlib
import hmac

from stream_app.errors import ConfigError

CUSTOMER = "cust"
TERMINAL = "term"
KINDS = (CUSTOMER, TERMINAL)
MIN_KEY_BYTES = 32
PSEUDONYM_BYTES = 16
MASK_SHOWN_CHARS = 2
MASK_SHOWN_FROM = 8
MASK_TAG_CHARS = 8


def check_key(key: bytes) -> None:
    """Raise :class:`ConfigError` if ``key`` is too short to hide enumerable ids (the
    message gives its length, never the key)."""
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"FRAUDSTREAM_PSEUDONYM_KEY is {len(key)} bytes long; use at least "
            f"{MIN_KEY_BYTES} random bytes, e.g. `openssl rand -hex 32 > pseudonym.key` and "
            "FRAUDSTREAM_PSEUDONYM_KEY_FILE=pseudonym.key"
        )


class Pseudonymizer:
    """HMAC-SHA256 pseudonyms of ids under a secret key (never shown by ``repr``)."""

    __slots__ = ("_macs",)

    def __init__(self, key: bytes) -> None:
        check_key(key)
        # one HMAC per kind that has taken in "<kind>:"; each pseudonym continues a copy
        self._macs = {kind: hmac.new(key, f"{kind}:".encode(), "sha256") for kind in KINDS}

    def __repr__(self) -> str:
        return "Pseudonymizer(key=***)"

    @classmethod
    def from_key(cls, key: str | bytes) -> Pseudonymizer | None:
        """The pseudonymizer of ``key`` (a setting's text is UTF-8 encoded); None if empty."""
        raw = key.encode() if isinstance(key, str) else key
        return cls(raw) if raw else None

    def pseudonym(self, kind: str, entity_id: str) -> str:
        """The pseudonym of the ``kind`` (:data:`CUSTOMER` / :data:`TERMINAL`) id, 32 hex
        characters."""
        mac = self._macs[kind].copy()
        mac.update(entity_id.encode())
        return mac.digest()[:PSEUDONYM_BYTES].hex()


def mask_id(kind: str, entity_id: str, pseudonymizer: Pseudonymizer | None) -> str:
    """``entity_id`` masked for output: e.g. ``…3f9c01d2``, or ``C1…3f9c01d2`` for an id of
    :data:`MASK_SHOWN_FROM` characters or more."""
    if pseudonymizer is None:
        tag = hashlib.sha256(f"{kind}:{entity_id}".encode()).hexdigest()
    else:
        tag = pseudonymizer.pseudonym(kind, entity_id)
    shown = entity_id[:MASK_SHOWN_CHARS] if len(entity_id) >= MASK_SHOWN_FROM else ""
    return f"{shown}…{tag[:MASK_TAG_CHARS]}"
