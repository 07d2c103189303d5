"""The risk history's store (aggregator/store/history_repo.py) on SQLite and PostgreSQL:
downsampling on write, step reads, pruning that keeps each account's newest point, and
a history that survives closing and reopening the store."""

from __future__ import annotations

import math

import pytest

from aggregator.store import Store
from aggregator.store.history_repo import AccountPoint, HistoryRepo, bucket, merge_system

STEPS = [60, 3600]
T0 = 1_765_000_800  # a multiple of 3600
A = "0x00000000000000000000000000000000000000aa"
B = "0x00000000000000000000000000000000000000bb"


def point(account: str, hf: float, tier: int, bp: float = 10.0) -> AccountPoint:
    return AccountPoint(
        account, hf, bp, tier, collateral_usd=100.0, debt_usd=50.0, req_standard=50.0
    )


def system(accounts: dict[str, int]) -> dict[str, object]:
    return {
        "total": {"accounts": sum(accounts.values())},
        "tiers": {t: {"accounts": n, "accounts_max": n} for t, n in accounts.items()},
        "chains": {"alpha": {"collateral_usd": 1.0, "debt_usd": 0.5, "credit_usd": 0.2}},
    }


def test_bucket_is_the_aligned_start() -> None:
    assert bucket(T0 + 59.9, 60) == T0
    assert bucket(T0 + 60, 60) == T0 + 60
    assert bucket(T0 + 3599, 3600) == T0


def test_merge_system_keeps_last_values_and_peak_counts() -> None:
    merged = merge_system(
        system({"healthy": 9, "warning": 3}), system({"healthy": 10, "warning": 1})
    )
    assert merged["tiers"]["healthy"] == {"accounts": 10, "accounts_max": 10}
    assert merged["tiers"]["warning"] == {"accounts": 1, "accounts_max": 3}
    assert merge_system(None, system({"warning": 2}))["tiers"]["warning"]["accounts_max"] == 2


async def test_hourly_bucket_holds_last_value_min_hf_and_worst_tier(store: Store) -> None:
    repo = HistoryRepo(store)
    # Three minutes inside one hour: HF 1.5 -> 0.9 (liquidatable) -> 1.2 (warning).
    for k, (hf, tier) in enumerate([(1.5, 0), (0.9, 2), (1.2, 1)]):
        await repo.write(T0 + 60 * k + 5, STEPS, system({"healthy": 1}), [point(A, hf, tier, bp=k)])
    minutes = await repo.account_points(60, A, T0, T0 + 3599)
    assert [(p.t, p.hf, p.tier, p.samples) for p in minutes] == [
        (T0, 1.5, 0, 1),
        (T0 + 60, 0.9, 2, 1),
        (T0 + 120, 1.2, 1, 1),
    ]
    (hour,) = await repo.account_points(3600, A, T0, T0 + 3599)
    assert (hour.t, hour.samples) == (T0, 3)
    assert (hour.hf, hour.hf_min, hour.bp) == (1.2, 0.9, 2.0)
    assert (hour.tier, hour.tier_worst) == (1, 2)
    (sys_hour,) = await repo.system_points(3600, T0, T0 + 3599)
    assert sys_hour["samples"] == 3 and sys_hour["t"] == T0


async def test_infinite_hf_round_trips(store: Store) -> None:
    repo = HistoryRepo(store)
    await repo.write(T0, STEPS, None, [point(A, math.inf, 0)])
    await repo.write(T0 + 60, STEPS, None, [point(A, 2.0, 0)])
    (hour,) = await repo.account_points(3600, A, T0, T0 + 10)
    assert hour.hf == 2.0 and hour.hf_min == 2.0
    first = (await repo.account_points(60, A, T0, T0 + 10))[0]
    assert first.hf == math.inf and first.hf_min == math.inf


async def test_read_starts_with_the_value_in_force(store: Store) -> None:
    repo = HistoryRepo(store)
    await repo.write(T0, STEPS, None, [point(A, 1.4, 0)])
    await repo.write(T0 + 600, STEPS, None, [point(A, 1.3, 0)])
    got = await repo.account_points(60, A, T0 + 300, T0 + 1200)
    # The point of T0 holds at T0 + 300 (nothing recorded between): it comes first.
    assert [(p.t, p.hf) for p in got] == [(T0, 1.4), (T0 + 600, 1.3)]
    assert await repo.account_points(60, B, T0, T0 + 1200) == []
    assert await repo.has_account(A) and not await repo.has_account(B)


async def test_prune_keeps_each_accounts_newest_point(store: Store) -> None:
    repo = HistoryRepo(store)
    await repo.write(T0, STEPS, system({"healthy": 2}), [point(A, 1.4, 0), point(B, 2.0, 0)])
    await repo.write(T0 + 60, STEPS, system({"healthy": 2}), [point(A, 1.3, 0)])
    await repo.write(T0 + 7200, STEPS, system({"healthy": 2}), [point(A, 1.2, 0)])
    removed = await repo.prune(60, T0 + 3600)
    # A's two old minutes go (it has a newer point); B's only point stays; 2 system rows go.
    assert removed == 4
    assert [p.t for p in await repo.account_points(60, A, 0, T0 + 9999)] == [T0 + 7200]
    assert [p.t for p in await repo.account_points(60, B, 0, T0 + 9999)] == [T0]
    assert [p["t"] for p in await repo.system_points(60, 0, T0 + 9999)] == [T0 + 7200]
    # The hour level is untouched by the minute level's pruning.
    assert len(await repo.account_points(3600, A, 0, T0 + 9999)) == 2
    assert await repo.last_points(60) == {A: (1.2, 10.0, 0), B: (2.0, 10.0, 0)}


async def test_history_survives_a_restart(store_url: tuple[str, str | None]) -> None:
    from tests.conftest import unmigrated_store

    url, schema = store_url
    first = await unmigrated_store(url, schema)
    await first.upgrade()
    await HistoryRepo(first).write(T0, STEPS, system({"healthy": 1}), [point(A, 1.1, 1)])
    await first.close()
    second = Store(url, pg_schema=schema)
    await second.upgrade()
    try:
        repo = HistoryRepo(second)
        assert [(p.t, p.hf) for p in await repo.account_points(60, A, T0, T0 + 60)] == [(T0, 1.1)]
        assert len(await repo.system_points(3600, T0, T0 + 60)) == 1
        assert await repo.last_points(60) == {A: (1.1, 10.0, 1)}
    finally:
        await second.close()


@pytest.mark.parametrize("n", [1, 5, 17])
async def test_batched_writes_write_every_point(store: Store, n: int) -> None:
    repo = HistoryRepo(store)
    points = [point(f"0x{i:040x}", 1.0 + i, 0) for i in range(n)]
    await repo.write(T0, STEPS, None, points, batch=4)
    assert len(await repo.last_points(3600)) == n
