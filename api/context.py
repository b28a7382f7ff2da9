"""Typed keys for what the app shares with its handlers."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from dispatcher.clock import Clock
from dispatcher.settings import Settings

POOL = web.AppKey("pool", asyncpg.Pool)
SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
# extra collaborators (metrics; "test_session", a delivery client for test sends that
# replaces the app's own), set by whoever builds the app
SERVICES = web.AppKey("services", dict[str, Any])


def pool(request: web.Request) -> asyncpg.Pool:
    return request.app[POOL]


def settings(request: web.Request) -> Settings:
    return request.app[SETTINGS]


def clock(request: web.Request) -> Clock:
    return request.app[CLOCK]
