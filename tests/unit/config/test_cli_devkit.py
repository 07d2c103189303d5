"""`aggregator demo` / `devnet` need the devkit/ package of a source checkout; without it
(an installed wheel) they exit 1 with one line saying so, before importing anything of it."""

from __future__ import annotations

import sys

import pytest

from aggregator.cli import main


@pytest.mark.parametrize("argv", [["demo"], ["devnet", "up"], ["devnet", "status"]])
def test_without_devkit_one_clear_line(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A None entry in sys.modules makes the package unfindable, as in a wheel install.
    monkeypatch.setitem(sys.modules, "devkit", None)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"aggregator {argv[0]}: needs a source checkout (the devkit/ package is not installed)"
    ]
