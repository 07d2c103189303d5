from hypothesis import given
from hypothesis import strategies as st

from chains.registry_codec import RegistryEntry
from chains.units import TIERS, decimal_text, usd6_text


def test_tier_code_is_the_index_of_the_name() -> None:
    assert TIERS == ("healthy", "warning", "liquidatable", "insolvent")
    assert [TIERS.index(t) for t in TIERS] == [0, 1, 2, 3]
    RegistryEntry(credit_usd6=0, hf_1e9=0, as_of=1, tier=len(TIERS) - 1)


def test_decimal_text_examples() -> None:
    assert decimal_text(0, 18) == "0"
    assert decimal_text(12_500_000, 6) == "12.5"
    assert decimal_text(1, 18) == "0.000000000000000001"
    assert decimal_text(10**18, 18) == "1"
    assert decimal_text(-1_500_000, 6) == "-1.5"
    assert decimal_text(42, 0) == "42"
    assert usd6_text(1_000_001) == "1.000001"


@given(st.integers(min_value=-(10**40), max_value=10**40), st.integers(0, 30))
def test_decimal_text_is_exact(amount: int, decimals: int) -> None:
    text = decimal_text(amount, decimals)
    # Parsed back by plain integer arithmetic, it is the same amount.
    neg = text.startswith("-")
    whole, _, frac = text.lstrip("-").partition(".")
    assert len(frac) <= decimals and not frac.endswith("0")
    back = int(whole) * 10**decimals + (int(frac.ljust(decimals, "0")) if frac else 0)
    assert (-back if neg else back) == amount
