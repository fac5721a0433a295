"""Which publisher and which rules a destination gets.

X is :mod:`bmsuploader.post.publishing`; every other kind is a module of
:mod:`bmsuploader.post.networks`, imported the first time a destination of that
kind posts (an X-only poster never imports them). Each such module provides:

* ``RULES`` -- its :class:`~bmsuploader.post.rules.PostRules`;
* ``SECRET_NAMES`` -- the SecureStrings it reads under the destination's ``secret`` path;
* ``SECRET_HINT`` -- where the operator gets those values (for the error message);
* ``build(destination, secrets, context) -> Publisher``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from functools import cache
from types import ModuleType
from typing import cast

from bmsuploader.config.destinations import Destination
from bmsuploader.contract.errors import ConfigError
from bmsuploader.contract.settings import PosterSettings
from bmsuploader.post import publishing
from bmsuploader.post.networks.base import NetworkContext, Publisher
from bmsuploader.post.rules import X_RULES, PostRules
from bmsuploader.post.secrets import load_secrets


def network_module(kind: str) -> ModuleType:
    return importlib.import_module(f"bmsuploader.post.networks.{kind}")


def rules_for(kind: str) -> PostRules:
    if kind == "x":
        return X_RULES
    return cast("PostRules", network_module(kind).RULES)


def publisher_for(settings: PosterSettings, destination: Destination, context: NetworkContext) -> Publisher:
    """The publisher for this attempt: the dry-run one, or the network's with the current secrets.

    Secrets are read through Powertools' cache (300 s), so a rotated one is picked up
    without a cold start; each set of secrets builds one publisher (and one connection pool).
    """
    if settings.dry_run or destination.dry_run:
        return publishing.DryRunPublisher(destination.name)
    if destination.kind == "x":
        return publishing.publisher_for(settings, destination.secret)
    module = network_module(destination.kind)
    assert destination.secret is not None  # the config requires one for every other kind
    allowed = settings.destinations_parameter_path.rstrip("/") + "/"
    if not destination.secret.startswith(allowed):
        raise ConfigError(
            f"destination {destination.name!r}: secret {destination.secret!r} is not under "
            f"DestinationsParameterPath {allowed!r}, the only path the poster may read; move the "
            f"parameters to {allowed}{destination.name}/ and set secret to match"
        )
    secrets = load_secrets(
        destination.secret,
        module.SECRET_NAMES,
        network=destination.kind.capitalize(),
        hint=module.SECRET_HINT,
    )
    return _built(module.build, destination, tuple(sorted(secrets.items())), context)


@cache
def _built(
    build: Callable[[Destination, Mapping[str, str], NetworkContext], Publisher],
    destination: Destination,
    secrets: tuple[tuple[str, str], ...],
    context: NetworkContext,
) -> Publisher:
    return build(destination, dict(secrets), context)
