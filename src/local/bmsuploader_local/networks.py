"""The other networks on loopback, for ``make run`` and the fault test: one fake server per kind.

:func:`start_networks` starts a fake for each destination kind other than X, stores the
secrets each fake accepts in SSM (on the moto server) under every destination's ``secret``
path, and gives the ``NETWORK_BASE_URLS`` the poster sends each kind to. Each
:class:`LocalNetwork` reads back the texts its fake accepted, so a run can show (and the
fault test judge) what each network received.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import boto3

from bmsuploader.config.destinations import Destination
from bmsuploader.post.destinations import network_module
from bmsuploader_local.loopback import LoopbackService


@dataclass
class LocalNetwork:
    """One kind's fake server, and how to read what it accepted."""

    kind: str
    fake: Any
    #: the secret values the fake accepts, by the module's SECRET_NAMES
    secrets: dict[str, str]
    #: the texts of the posts it holds, oldest first
    texts: Callable[[], list[str]]
    #: the base URL the poster sends this kind to
    base_url: str


def _mastodon() -> tuple[LoopbackService, Callable[[Any], LocalNetwork]]:
    from bmsuploader_local.fake_mastodon import FakeMastodon

    def ready(fake: Any) -> LocalNetwork:
        return LocalNetwork(
            "mastodon",
            fake,
            {"access_token": fake.token},
            lambda: [s["text"] for s in fake.posts()],
            fake.base_url,
        )

    return FakeMastodon(), ready


def _misskey() -> tuple[LoopbackService, Callable[[Any], LocalNetwork]]:
    from bmsuploader_local.fake_misskey import FakeMisskey

    def ready(fake: Any) -> LocalNetwork:
        return LocalNetwork(
            "misskey", fake, {"token": fake.token}, lambda: [n["text"] for n in fake.posts()], fake.base_url
        )

    return FakeMisskey(), ready


def _bluesky() -> tuple[LoopbackService, Callable[[Any], LocalNetwork]]:
    from bmsuploader_local.fake_bluesky import FakeBluesky

    def ready(fake: Any) -> LocalNetwork:
        return LocalNetwork(
            "bluesky",
            fake,
            {"identifier": fake.handle, "app_password": fake.app_password},
            lambda: [p["text"] for p in fake.posts],
            fake.base_url,
        )

    return FakeBluesky(), ready


def _discord() -> tuple[LoopbackService, Callable[[Any], LocalNetwork]]:
    from bmsuploader_local.fake_discord import FakeDiscord

    def ready(fake: Any) -> LocalNetwork:
        return LocalNetwork(
            "discord",
            fake,
            {"webhook_url": fake.webhook_url},  # discord.com's URL: the publisher sends it to base_url
            lambda: [p["content"] for p in fake.posts],
            fake.base_url,
        )

    return FakeDiscord(), ready


FAKES: dict[str, Callable[[], tuple[LoopbackService, Callable[[Any], LocalNetwork]]]] = {
    "bluesky": _bluesky,
    "discord": _discord,
    "mastodon": _mastodon,
    "misskey": _misskey,
}


@contextlib.contextmanager
def start_networks(destinations: Sequence[Destination]) -> Iterator[dict[str, LocalNetwork]]:
    """Fakes for the destinations' kinds (X excepted: see :mod:`bmsuploader_local.fake_x`), with
    their secrets stored in SSM. Yields them by kind; :func:`base_urls` makes the variable."""
    kinds = sorted({d.kind for d in destinations if d.kind != "x"})
    with contextlib.ExitStack() as stack:
        networks: dict[str, LocalNetwork] = {}
        for kind in kinds:
            fake, ready = FAKES[kind]()
            networks[kind] = ready(stack.enter_context(fake))
        ssm = boto3.client("ssm")
        for destination in destinations:
            if destination.kind == "x" or destination.secret is None:
                continue
            network = networks[destination.kind]
            for name in network_module(destination.kind).SECRET_NAMES:
                ssm.put_parameter(
                    Name=f"{destination.secret}/{name}",
                    Value=network.secrets[name],
                    Type="SecureString",
                    Overwrite=True,
                )
        yield networks


def base_urls(networks: dict[str, LocalNetwork]) -> str:
    """``NETWORK_BASE_URLS`` for these fakes."""
    return json.dumps({kind: network.base_url for kind, network in networks.items()})
