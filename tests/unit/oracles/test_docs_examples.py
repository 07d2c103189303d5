"""The example source configs in docs/oracles.md must load."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pydantic import TypeAdapter

from oracles.config import SourceConfig

DOC = Path(__file__).resolve().parents[3] / "docs" / "oracles.md"


def test_every_documented_source_example_validates() -> None:
    text = DOC.read_text()
    adapter: TypeAdapter[SourceConfig] = TypeAdapter(SourceConfig)
    inline = [ln for ln in text.splitlines() if ln.startswith("{ kind = ")]
    assert {tomllib.loads(f"x = {ln}")["x"]["name"] for ln in inline} == {
        "coinbase",
        "binance",
        "kraken",
        "coingecko",
    }
    for ln in inline:
        adapter.validate_python(tomllib.loads(f"x = {ln}")["x"])
    blocks = re.findall(r"```toml\n(\[\[assets\.sources\]\].*?)```", text, re.S)
    assert blocks
    for block in blocks:
        for src in tomllib.loads(block)["assets"]["sources"]:
            adapter.validate_python(src)
