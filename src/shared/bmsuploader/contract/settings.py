"""Settings: the environment each function reads, as typed models, read once.

template.yaml sets these variables; the models are the contract. Each field's
variable is its name in upper case (``table_name`` -> ``TABLE_NAME``). A
missing or malformed variable raises :class:`ConfigError` naming the variable,
before anything is fetched or posted. Nothing else in the pipeline reads
``os.environ``: tests and the template contract test ask the models which
variables exist (:meth:`EnvSettings.variables`).

Money is a :class:`~decimal.Decimal` and is counted in micro-USD integers in
DynamoDB, so the monthly spend never drifts by float rounding.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, Json, ValidationError, field_validator

from bmsuploader.contract.errors import ConfigError

MICRO = 1_000_000


class EnvSettings(BaseModel):
    """Base: one field per environment variable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = os.environ if environ is None else environ
        # An empty value is "not set": template.yaml declares optional variables as "".
        values = {name: env[name.upper()] for name in cls.model_fields if env.get(name.upper())}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{str(err['loc'][0]).upper() if err['loc'] else '<environment>'}: "
                + (
                    "is not set"
                    if err["type"] == "missing"
                    else str(err["msg"]).removeprefix("Value error, ")
                )
                for err in exc.errors()
            )
            raise ConfigError(f"environment: {problems}") from exc

    @classmethod
    def variables(cls) -> frozenset[str]:
        return frozenset(name.upper() for name in cls.model_fields)

    @classmethod
    def required_variables(cls) -> frozenset[str]:
        return frozenset(name.upper() for name, field in cls.model_fields.items() if field.is_required())


class Telemetry(EnvSettings):
    """What Powertools reads too; defaults for runs outside Lambda."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    powertools_service_name: str = "bmsuploader"
    powertools_metrics_namespace: str = "BmsUploader"


class LambdaEnvironment(EnvSettings):
    """What the Lambda runtime sets (reserved: template.yaml cannot set these)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    #: the deployed function's name; Powertools idempotency puts it in every record key,
    #: with the same default outside Lambda
    aws_lambda_function_name: str = "test-func"


class SourcesSettings(EnvSettings):
    #: the sources file; unset = the bundled sources.toml
    sources_file: Path | None = None


class Spending(EnvSettings):
    """The monthly spend limit and X's prices (USD). Both functions read them."""

    #: USD a month; 0 = no limit (not recommended: X charges per post)
    monthly_spend_limit_usd: Decimal = Field(default=Decimal(20), ge=0)
    cost_per_post: Decimal = Field(default=Decimal("0.015"), ge=0)
    cost_per_post_with_url: Decimal = Field(default=Decimal("0.200"), ge=0)

    @property
    def limit_micro(self) -> int | None:
        """The limit in micro-USD; ``None`` = no limit."""
        return to_micro(self.monthly_spend_limit_usd) or None

    def cost_micro(self, *, has_url: bool) -> int:
        return to_micro(self.cost_per_post_with_url if has_url else self.cost_per_post)

    @property
    def max_cost_micro(self) -> int:
        """What the dearest post costs: the fetcher's estimate when it re-queues the backlog."""
        return max(self.cost_micro(has_url=True), self.cost_micro(has_url=False), 1)


def to_micro(usd: Decimal) -> int:
    return int((usd * MICRO).to_integral_value())


class FetcherSettings(SourcesSettings, Spending):
    table_name: str
    queue_url: str
    max_enqueue_per_run: int = Field(default=20, ge=1, le=1000)
    #: a source with no new entry for this many hours is reported silent; 0 = never
    silent_source_hours: int = Field(default=168, ge=0)


class PosterSettings(SourcesSettings, Spending):
    table_name: str
    queue_url: str
    dlq_url: str
    idempotency_table: str
    x_parameter_path: str = Field(pattern=r"^/[^\s]*[^/\s]$")
    #: the other destinations' secrets must be under it (the poster's role reads nothing else)
    destinations_parameter_path: str = Field(default="/bmsuploader/destinations", pattern=r"^/[^\s]*[^/\s]$")
    #: empty = the real X API; local runs and tests point it at a fake X
    x_api_base_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+")
    #: empty = the real networks; local runs and tests point each kind at a fake server,
    #: as JSON: {"bluesky": "http://127.0.0.1:8131", "discord": "http://127.0.0.1:8134"}
    network_base_urls: Json[dict[str, Annotated[str, Field(pattern=r"^https?://[^/\s]+")]]] | None = None
    dry_run: bool = False

    @field_validator("dry_run", mode="before")
    @classmethod
    def _true_or_false(cls, value: object) -> object:
        if isinstance(value, str) and value.lower() not in ("true", "false"):
            raise ValueError(f"must be 'true' or 'false', not {value!r}")
        return value
