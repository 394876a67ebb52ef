"""What the application holds besides the service stubs (gateway/stubs.py), as typed route
dependencies: its settings, the captcha verifier, the event bus and the revocation feed.

These functions and gateway/stubs.py are the only readers of `app.state`; a route names what it
needs (`settings: Settings`) and mypy knows its type."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from gateway.captcha import Captcha
from gateway.revocations import RevokedSessions
from gateway.settings import GatewaySettings
from libs.common.bus import EventBus


def settings_of(conn: HTTPConnection) -> GatewaySettings:
    settings: GatewaySettings = conn.app.state.settings
    return settings


def captcha_of(conn: HTTPConnection) -> Captcha:
    captcha: Captcha = conn.app.state.captcha
    return captcha


def bus_of(conn: HTTPConnection) -> EventBus:
    bus: EventBus = conn.app.state.bus
    return bus


def revocations_of(conn: HTTPConnection) -> RevokedSessions:
    revoked: RevokedSessions = conn.app.state.revoked
    return revoked


Settings = Annotated[GatewaySettings, Depends(settings_of)]
CaptchaVerifier = Annotated[Captcha, Depends(captcha_of)]
Bus = Annotated[EventBus, Depends(bus_of)]
Revocations = Annotated[RevokedSessions, Depends(revocations_of)]
