"""`assets[i].liquidity` and `[liquidity]`: validation errors name the field."""

from __future__ import annotations

from pathlib import Path

from test_config import BASE, problems, write  # type: ignore[import-not-found]

from aggregator.config import load_config

POOL = "0x" + "33" * 20


def test_pools_and_liquidity_section_load(tmp_path: Path) -> None:
    text = BASE.replace(
        "lt = 0.85\n", f'lt = 0.85\nliquidity = [{{ chain = "alpha", pool = "{POOL}" }}]\n'
    )
    text += "\n[liquidity]\nband = 0.1\nmax_deviation = 0.03\nmax_age_blocks = 12\n"
    cfg = load_config(write(tmp_path, text))
    ref = cfg.asset("USDC").liquidity[0]
    assert (ref.chain, ref.pool.lower()) == ("alpha", POOL)
    assert cfg.liquidity.band == 0.1 and cfg.liquidity.max_age_blocks == 12
    assert cfg.liquidity.max_liquidity_move == 0.5  # default


def test_unknown_chain_missing_token_and_duplicate_pool_name_the_field(tmp_path: Path) -> None:
    refs = [("gamma", POOL), ("beta", POOL), ("alpha", POOL), ("alpha", POOL)]
    body = ", ".join(f'{{ chain = "{c}", pool = "{p}" }}' for c, p in refs)
    pools = f"liquidity = [{body}]\n"
    out = problems(tmp_path, BASE.replace("lt = 0.85\n", "lt = 0.85\n" + pools))
    assert any(p.startswith("assets[0].liquidity[0].chain: unknown chain 'gamma'") for p in out)
    assert any(
        p.startswith("assets[0].liquidity[1].chain: USDC has no token on 'beta'") for p in out
    )
    assert any(p.startswith("assets[0].liquidity[3]: duplicate pool") for p in out)


def test_bad_pool_address_and_bounds_name_the_field(tmp_path: Path) -> None:
    text = BASE.replace(
        "lt = 0.85\n", 'lt = 0.85\nliquidity = [{ chain = "alpha", pool = "0x12" }]\n'
    )
    assert problems(tmp_path, text) == [
        "assets[0].liquidity[0].pool: not a valid 20-byte hex address: '0x12'"
    ]
    for key, value in (("band", "0.95"), ("max_deviation", "0"), ("max_age_blocks", "0")):
        out = problems(tmp_path, BASE + f"\n[liquidity]\n{key} = {value}\n")
        assert any(key in p for p in out), (key, out)
