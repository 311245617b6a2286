"""The collection rules of tests/conftest.py: server fixtures need the integration marker."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

_CONFTEST = "from tests.conftest import pytest_collection_modifyitems, redis_url  # noqa: F401\n"


def test_an_unmarked_test_using_a_server_fixture_stops_collection(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(_CONFTEST)
    pytester.makepyfile(test_uses_redis="def test_x(redis_url):\n    assert redis_url\n")
    result = pytester.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*not marked integration*", "*test_uses_redis.py::test_x*"])
