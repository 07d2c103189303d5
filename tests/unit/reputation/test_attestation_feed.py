"""The attestation input (aggregator/attestation_feed.py) feeding the reputation job:
attested accounts get their multiplier (even never-seen ones, for a bad word), the API
view shows each attestation's status and the factor's weight, a chain whose read fails
keeps only its bad words and is named by the job's error, a wrong registry stops the
start naming its field, an RPC failure at start does not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aggregator.attestation_feed import AttestationFeed, AttestationInputError
from aggregator.config import AppConfig
from aggregator.reputation_feed import ReputationFeed
from aggregator.startup import StartupError
from aggregator.store import Store
from chains.rpc import RpcUnavailable
from tests.unit.chains.attestation_fakes import GOOD, ROGUE, SUBJ, FakeRegistry, rec
from tests.unit.reputation.test_reputation_feed import Sink

REGS = {"alpha": "0x" + "71" * 20, "beta": "0x" + "72" * 20}
OTHER = "0x" + "6" * 40


def config(attesters: tuple[str, ...] = (GOOD,)) -> AppConfig:
    chains = [
        {"name": n, "chain_id": i + 1, "rpc_urls": ["http://127.0.0.1:1"],
         "confirmations": 3, "contracts": {"vault": f"0x{i + 1:040x}", "attestations": REGS[n]}}
        for i, n in enumerate(REGS)
    ]  # fmt: skip
    return AppConfig(
        chains=chains,
        assets=[{"symbol": "USDC", "decimals": 6, "ltv": 0.85, "lt": 0.88}],
        reputation={"enabled": True, "attestation": {"attesters": list(attesters)}},
    )  # type: ignore[arg-type]


class Prices:
    def price_usd(self, symbol: str) -> float | None:
        return 1.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(f"sqlite+aiosqlite:///{tmp_path}/agg.db")
    await s.upgrade()
    yield s
    await s.close()


Wired = tuple[AttestationFeed, ReputationFeed, Sink]


def wired(store: Store, fakes: dict[str, FakeRegistry]) -> Wired:
    att = AttestationFeed(config(), fakes)  # type: ignore[arg-type]
    sink = Sink()
    return att, ReputationFeed(config(), store, sink, Prices(), attestations=att), sink


async def test_attested_accounts_are_scored_and_explained(store: Store) -> None:
    fakes = {
        "alpha": FakeRegistry(records={1: rec(score=9000, subject=OTHER)}),
        "beta": FakeRegistry(records={1: rec(score=-5000), 2: rec(attester=ROGUE)}),
    }
    att, feed, sink = wired(store, fakes)
    await att.start(retry_delay_s=0)
    await feed.run()
    # Never seen in the vault: the bad word counts at once, the good one cannot help.
    assert sink.calls[-1] == {SUBJ: pytest.approx(1.15)}
    view = feed.view(SUBJ)
    assert view is not None
    factor = {f["name"]: f for f in view["factors"]}["attestation"]  # type: ignore[index]
    assert (factor["value"], factor["weight"], factor["contribution"]) == (
        -0.5, 0.30, pytest.approx(-0.15),
    )  # fmt: skip
    (a,) = view["history"]["attestations"]  # the rogue attester's record is not even kept
    assert (a["chain"], a["uid"], a["score_bps"], a["status"]) == ("beta", 1, -5000, "counted")
    assert view["history"]["attestation_inputs"]["beta"]["snapshot"]["block"] == 97
    assert feed.reputation(OTHER).multiplier == 1.0

    # Revoked on chain: back to neutral at the next run.
    fakes["beta"].head, fakes["beta"].records[1] = 101, rec(score=-5000, revoked=True)
    await feed.run()
    assert sink.calls[-1] == {}
    assert feed.view(SUBJ)["history"]["attestations"][0]["status"] == "revoked"  # type: ignore[index]


async def test_an_unreadable_chain_keeps_only_bad_words_and_names_itself(store: Store) -> None:
    fakes = {"alpha": FakeRegistry(records={1: rec(score=-2000, subject=OTHER),
                                            2: rec(score=5000)}),
             "beta": FakeRegistry(records={1: rec(score=-5000)})}  # fmt: skip
    att, feed, sink = wired(store, fakes)
    await att.start(retry_delay_s=0)
    await feed.run()

    def alpha_status() -> list[str]:
        view = feed.view(SUBJ)
        assert view is not None
        return [a["status"] for a in view["history"]["attestations"] if a["chain"] == "alpha"]

    assert alpha_status() == ["counted"]
    # alpha turns hostile (a malformed record for the new uid): the job still scores,
    # alpha's last known records count only when bad, and the error names alpha.
    fakes["alpha"].head = 101
    fakes["alpha"].records[3] = rec(score=3000)
    fakes["alpha"].hostile[3] = b"\x00" * 64
    with pytest.raises(AttestationInputError, match="chain 'alpha'"):
        await feed.run()
    assert sink.calls[-1] == {SUBJ: pytest.approx(1.15), OTHER: pytest.approx(1.06)}
    assert "alpha" in att.errors and "beta" not in att.errors
    assert alpha_status() == ["chain unreadable this run: only a negative score counts"]
    # It recovers by itself once the answers are sane again.
    del fakes["alpha"].hostile[3]
    await feed.run()
    assert att.errors == {}
    assert alpha_status()[0].startswith("superseded") and alpha_status()[1] == "counted"


async def test_start_names_a_wrong_registry_and_survives_rpc_failures(store: Store) -> None:
    bad = {"alpha": FakeRegistry(), "beta": FakeRegistry(code="0x")}
    with pytest.raises(StartupError, match=r"chains\[1\]\.contracts\.attestations.*'beta'"):
        await AttestationFeed(config(), bad).start(retry_delay_s=0)  # type: ignore[arg-type]

    class Down(FakeRegistry):
        fail = True

        async def request(self, method: str, params: list[object]) -> object:
            if self.fail:
                raise RpcUnavailable("beta", method, ["connection refused"], timed_out=False)
            return await super().request(method, params)

    down = Down(records={1: rec(score=-5000)})
    att, feed, sink = wired(store, {"alpha": FakeRegistry(), "beta": down})
    await att.start(retry_delay_s=0)  # no exception: not a config problem
    assert "not validated" in att.errors["beta"]
    with pytest.raises(AttestationInputError, match="beta"):
        await feed.run()
    assert sink.calls[-1] == {}  # nothing read from an unvalidated registry
    down.fail = False
    await feed.run()
    assert sink.calls[-1] == {SUBJ: pytest.approx(1.15)}


def test_off_without_attesters_or_registries() -> None:
    assert not AttestationFeed(config(attesters=()), {}).enabled  # type: ignore[arg-type]
    assert AttestationFeed(config(), {"alpha": None, "beta": None}).enabled  # type: ignore[dict-item]
