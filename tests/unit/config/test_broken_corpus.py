"""A corpus of broken configs (tests/unit/config/broken/*.toml): each file names, in
`# expect:` comments, exactly the problems loading it must report (path and message;
`{dir}` stands for the corpus directory). The same text is what `aggregator config
check` prints and what the daemon refuses to start with."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.config import ConfigError, load_config

CORPUS = Path(__file__).resolve().parent / "broken"
FILES = sorted(CORPUS.glob("*.toml"))


def expected(path: Path) -> list[str]:
    return [
        line.removeprefix("# expect: ").replace("{dir}", str(CORPUS))
        for line in path.read_text().splitlines()
        if line.startswith("# expect: ")
    ]


def test_the_corpus_is_there() -> None:
    assert len(FILES) >= 12
    assert all(expected(f) for f in FILES), [f.name for f in FILES if not expected(f)]


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_each_broken_config_gets_exactly_its_error(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [str(p) for p in info.value.problems] == expected(path)
    # The CLI prints the same lines and exits non-zero.
    assert main(["config", "check", str(path)]) != 0
    out = capsys.readouterr()
    for line in expected(path):
        assert line in out.out + out.err
