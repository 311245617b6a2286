"""Every secret the test suite hands to fraudstream, in one place.

``tests/conftest.py`` searches every test's captured output and logs for these values
and fails the run when one appears: no secret may be printed or logged, also not a wrong
one.
"""

from __future__ import annotations

REDIS_PASSWORD = "redis-pw-5f0e93c1d2"
WRONG_REDIS_PASSWORD = "wrong-password-77e1"
KEY_PASSWORD = "key-pw-a81b7c2e44"
SASL_PASSWORD = "sasl-pw-0c9d4b"
PLAIN_SASL_PASSWORD = "plain-pw-3e8a1f"
CRASH_PSEUDONYM_KEY = "crash-test-pseudonym-key-0123456789abcdef"
PARITY_PSEUDONYM_KEY = "parity-pseudonym-key-0123456789abcdef"
STORE_PSEUDONYM_KEY = "test-pseudonym-key-0123456789abcdef"
ALERTS_PSEUDONYM_KEY = "alerts-test-pseudonym-key-0123456789"
CONSOLE_TOKEN = "console-token-7d41c0a9e2b6f3"
OTHER_CONSOLE_TOKEN = "console-token-bob-5a92e17c"
WRONG_CONSOLE_TOKEN = "console-token-wrong-c83b1f"

SECRETS = (
    REDIS_PASSWORD,
    WRONG_REDIS_PASSWORD,
    KEY_PASSWORD,
    SASL_PASSWORD,
    PLAIN_SASL_PASSWORD,
    CRASH_PSEUDONYM_KEY,
    PARITY_PSEUDONYM_KEY,
    STORE_PSEUDONYM_KEY,
    ALERTS_PSEUDONYM_KEY,
    CONSOLE_TOKEN,
    OTHER_CONSOLE_TOKEN,
    WRONG_CONSOLE_TOKEN,
)
