"""Golden tests skip where ../shared is absent, except under CI, where missing reference data is a failure."""

from pathlib import Path

import pytest

from conftest import require_golden


@pytest.mark.parametrize("value, fails", [("true", True), ("1", True), ("", False), ("false", False), (None, False)])
def test_missing_golden_data_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path, value, fails):
    missing = tmp_path / "no_such_golden"
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    expected = pytest.fail.Exception if fails else pytest.skip.Exception
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception), match="golden data not found") as info:
        require_golden(missing)
    assert info.type is expected  # (a skip must not leak out as this test's own outcome)
    assert require_golden(tmp_path) == tmp_path  # present: used, whatever CI says


def test_golden_directories_are_beside_the_checkout():
    import conftest

    root = Path(__file__).resolve().parents[1]
    assert conftest.GOLDEN_DIR == root.parent / "shared" / "golden" / "diamond_small"
    assert conftest.ATARI26_DIR == root.parent / "shared" / "golden" / "atari26"
