"""Pseudonyms (keyed HMACs of ids) and masks: their definition, key checks, secrecy."""

from __future__ import annotations

import hashlib
import hmac
import pickle
from pathlib import Path

import pytest

from stream_app.errors import ConfigError
from stream_app.features.redis_store import RedisStoreConfig
from stream_app.features.spec import feature_set
from stream_app.pseudonyms import CUSTOMER, TERMINAL, Pseudonymizer, mask_id
from stream_app.settings import Settings

KEY = b"k" * 32


def test_a_pseudonym_is_the_documented_hmac_of_kind_and_id() -> None:
    expected = hmac.new(KEY, b"cust:C123", hashlib.sha256).hexdigest()[:32]
    assert Pseudonymizer(KEY).pseudonym(CUSTOMER, "C123") == expected


def test_pseudonyms_are_deterministic_per_key_and_differ_by_key_and_kind() -> None:
    one, same, other = Pseudonymizer(KEY), Pseudonymizer(bytes(KEY)), Pseudonymizer(b"x" * 32)
    assert one.pseudonym(CUSTOMER, "42") == same.pseudonym(CUSTOMER, "42")
    assert one.pseudonym(CUSTOMER, "42") != other.pseudonym(CUSTOMER, "42")
    assert one.pseudonym(CUSTOMER, "42") != one.pseudonym(TERMINAL, "42")
    assert one.pseudonym(CUSTOMER, "42") != one.pseudonym(CUSTOMER, "43")


def test_a_short_key_is_refused_naming_its_length_and_the_fix_never_the_key() -> None:
    with pytest.raises(ConfigError) as raised:
        Pseudonymizer(b"hunter2")
    message = str(raised.value)
    assert "7 bytes" in message and "at least 32" in message and "_FILE" in message
    assert "hunter2" not in message


def test_an_empty_key_means_no_pseudonyms() -> None:
    assert Pseudonymizer.from_key("") is None
    assert Pseudonymizer.from_key(b"") is None
    from_text = Pseudonymizer.from_key("k" * 32)
    assert from_text is not None and from_text.pseudonym(CUSTOMER, "1") == Pseudonymizer(
        KEY
    ).pseudonym(CUSTOMER, "1")


def test_settings_read_the_key_from_a_file_check_it_and_hide_it(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_text("s3cret-" * 5 + "\n")
    settings = Settings.from_env({"FRAUDSTREAM_PSEUDONYM_KEY_FILE": str(path)})
    assert settings.pseudonym_key == "s3cret-" * 5
    assert "s3cret" not in repr(settings)
    path.write_text("short\n")
    with pytest.raises(ConfigError, match="FRAUDSTREAM_PSEUDONYM_KEY is 5 bytes long"):
        Settings.from_env({"FRAUDSTREAM_PSEUDONYM_KEY_FILE": str(path)})


def test_the_store_config_carries_the_key_through_pickle_and_never_shows_it() -> None:
    secret = b"s3cret-" * 5
    config = RedisStoreConfig(
        "redis://127.0.0.1:1/0", feature_set("default"), "p:", 45, 1.0, pseudonym_key=secret
    )
    assert pickle.loads(pickle.dumps(config)).pseudonym_key == secret
    assert "s3cret" not in repr(config)
    assert "s3cret" not in repr(Pseudonymizer(secret))


def test_a_mask_keeps_two_characters_of_long_ids_only_and_tags_with_the_pseudonym() -> None:
    pseudonymizer = Pseudonymizer(KEY)
    tag = pseudonymizer.pseudonym(TERMINAL, "T-00012345")[:8]
    assert mask_id(TERMINAL, "T-00012345", pseudonymizer) == f"T-…{tag}"
    short = mask_id(CUSTOMER, "523", pseudonymizer)
    assert short == "…" + pseudonymizer.pseudonym(CUSTOMER, "523")[:8]


def test_without_a_key_the_mask_tag_is_a_plain_sha256() -> None:
    tag = hashlib.sha256(b"cust:C0000001").hexdigest()[:8]
    assert mask_id(CUSTOMER, "C0000001", None) == f"C0…{tag}"
    assert mask_id(CUSTOMER, "C0000001", None) != mask_id(TERMINAL, "C0000001", None)
