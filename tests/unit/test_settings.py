"""Settings models: every variable typed, every mistake named."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bmsuploader.contract.errors import ConfigError
from bmsuploader.contract.settings import FetcherSettings, PosterSettings, Spending

POSTER = {
    "TABLE_NAME": "state",
    "QUEUE_URL": "http://q",
    "DLQ_URL": "http://dlq",
    "IDEMPOTENCY_TABLE": "idem",
    "X_PARAMETER_PATH": "/bmsuploader/x",
}


def test_defaults_are_finite_and_empty_values_mean_unset() -> None:
    settings = PosterSettings.from_env({**POSTER, "X_API_BASE_URL": "", "SOURCES_FILE": ""})
    assert settings.monthly_spend_limit_usd == Decimal(20)
    assert settings.x_api_base_url is None and settings.sources_file is None
    assert settings.dry_run is False


def test_a_missing_variable_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^environment: QUEUE_URL: is not set"):
        FetcherSettings.from_env({"TABLE_NAME": "state"})


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("DRY_RUN", "yes", "DRY_RUN: must be 'true' or 'false'"),
        ("MONTHLY_SPEND_LIMIT_USD", "-1", "MONTHLY_SPEND_LIMIT_USD: "),
        ("COST_PER_POST", "cheap", "COST_PER_POST: "),
        ("X_PARAMETER_PATH", "bmsuploader/x", "X_PARAMETER_PATH: "),
        ("X_API_BASE_URL", "ftp://x", "X_API_BASE_URL: "),
    ],
)
def test_a_malformed_variable_is_named(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PosterSettings.from_env({**POSTER, name: value})
    assert says in str(caught.value)


def test_spend_is_counted_in_micro_usd_without_float_drift() -> None:
    spending = Spending(monthly_spend_limit_usd=Decimal("0.3"), cost_per_post=Decimal("0.1"))
    assert spending.limit_micro == 300_000
    assert spending.cost_micro(has_url=False) * 3 == spending.limit_micro
    assert spending.max_cost_micro == 200_000
    assert Spending(monthly_spend_limit_usd=Decimal(0)).limit_micro is None


def test_the_required_variables_are_the_fields_without_a_default() -> None:
    assert FetcherSettings.required_variables() == {"TABLE_NAME", "QUEUE_URL"}
    assert PosterSettings.required_variables() == set(POSTER)
