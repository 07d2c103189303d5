"""`[history]` configuration (docs/configuration.md). Pure pydantic: no I/O."""

from __future__ import annotations

import itertools

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HistoryLevel(_Strict):
    """One resolution: buckets of `step_s` seconds, kept for `keep_s` seconds."""

    step_s: int = Field(ge=1, le=86400 * 7)
    keep_s: int = Field(gt=0)

    @model_validator(mode="after")
    def _keep(self) -> HistoryLevel:
        if self.keep_s < self.step_s:
            raise ValueError(f"keep_s ({self.keep_s}) must be at least step_s ({self.step_s})")
        return self


def _default_levels() -> list[HistoryLevel]:
    return [HistoryLevel(step_s=60, keep_s=86400), HistoryLevel(step_s=3600, keep_s=90 * 86400)]


class HistoryConfig(_Strict):
    """[history]: what the `history` job records and how long it is kept."""

    enabled: bool = True
    # Job period; the finest level's step is the natural choice.
    interval_s: float = Field(default=60.0, gt=0)
    levels: list[HistoryLevel] = Field(default_factory=_default_levels, min_length=1)
    # Relative move of HF or BP since an account's last point that makes a new point.
    hf_deadband: float = Field(default=0.01, ge=0, lt=1)
    bp_deadband: float = Field(default=0.01, ge=0, lt=1)
    # Accounts written per run at most (tier changes first, then the lowest HF).
    max_accounts_per_bucket: int = Field(default=20_000, ge=1)
    # Accounts per write transaction (each written at every level). Small: building the
    # parameters runs on the event loop, so a batch is a pause of the API (~40 ms at 500).
    write_batch: int = Field(default=500, ge=1, le=50_000)

    @model_validator(mode="after")
    def _levels(self) -> HistoryConfig:
        steps = [lv.step_s for lv in self.levels]
        if steps != sorted(set(steps)):
            raise ValueError(f"levels: step_s must be strictly increasing, got {steps}")
        for fine, coarse in itertools.pairwise(steps):
            if coarse % fine:
                raise ValueError(
                    f"levels: step_s {coarse} is not a multiple of the finer step {fine}"
                )
        return self
