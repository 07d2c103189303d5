"""Facts about on-chain units that every layer shares, defined once.

chains/ imports nothing of aggregator/, so what both the on-chain codec and the risk
ledger need lives here and is imported upward:

- `TIERS`: the risk tiers in code order. The index of a name is its uint8 code in the
  HealthRegistry slot (chains/registry_codec.py); the ledger stores the same codes.
- `USD6`: one US dollar in the registry's credit unit (micro-dollars).
- `decimal_text` / `usd6_text`: a raw integer amount as an exact decimal string, so an
  API never prints a float's rounding (12.5, not 12.499999999).
"""

from __future__ import annotations

from typing import Final

TIERS: Final = ("healthy", "warning", "liquidatable", "insolvent")
USD6: Final = 10**6


def decimal_text(amount: int, decimals: int) -> str:
    """Exact decimal string of a raw integer amount with `decimals` decimals: no
    trailing zeros, no decimal point for a whole number, a leading '-' if negative."""
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0, got {decimals}")
    amount = int(amount)
    if amount < 0:
        return "-" + decimal_text(-amount, decimals)
    if decimals == 0:
        return str(amount)
    whole, frac = divmod(amount, 10**decimals)
    frac_s = str(frac).rjust(decimals, "0").rstrip("0")
    return f"{whole}.{frac_s}" if frac_s else str(whole)


def usd6_text(v: int) -> str:
    """A USD6 integer as an exact decimal string."""
    return decimal_text(v, 6)


__all__ = ["TIERS", "USD6", "decimal_text", "usd6_text"]
