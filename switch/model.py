"""Read models and collaborator protocols shared by the engine and its edges.

The HTTP API only sees the engine through these: views are frozen values the
SIP/call layers hand out, protocols are what the composition root wires in.
Keeping them here (not in ``switch/http``) lets the SIP core and the call
controller implement them without importing aiohttp.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "CallControl",
    "CallView",
    "ConflictError",
    "ControlError",
    "ForbiddenError",
    "InvalidRequestError",
    "NotFoundError",
    "PartyView",
    "RecordingView",
    "RegistrationSource",
    "RegistrationView",
    "TransferView",
    "VoicemailView",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationView:
    extension: str
    contact: str
    """The Contact URI as registered."""
    expires_at: float
    """Unix time (seconds) at which the binding expires."""
    user_agent: str
    source: str
    """Where the REGISTER came from, e.g. ``udp:192.0.2.7:5062``."""


class RegistrationSource(Protocol):
    def list_registrations(self) -> Sequence[RegistrationView]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PartyView:
    extension_or_number: str
    leg_id: str
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallView:
    id: str
    state: str
    parties: tuple[PartyView, ...]
    recording: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferView:
    id: str
    call_id: str
    kind: str
    """blind | warm | voicemail"""
    state: str
    by: str
    target: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingView:
    call_id: str
    recording: bool
    path: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VoicemailView:
    id: str
    extension: str
    caller: str
    duration: float
    """Seconds."""
    created_at: float
    """Unix time."""
    path: Path


class ControlError(Exception):
    """A refusal by call control; the HTTP layer turns it into its status and JSON."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(ControlError):
    status = 400
    code = "invalid_request"


class NotFoundError(ControlError):
    status = 404
    code = "not_found"


class ForbiddenError(ControlError):
    """Policy forbids it (e.g. transfers to external numbers)."""

    status = 403
    code = "forbidden"


class ConflictError(ControlError):
    """The call/transfer is in no state for this (e.g. already transferring)."""

    status = 409
    code = "conflict"


class CallControl(Protocol):
    """What ``/api/v1/calls``, ``/transfers`` and ``/voicemail`` drive.

    Methods raise :class:`ControlError` subclasses for refusals.
    """

    def list_calls(self) -> Sequence[CallView]: ...

    async def hang_up(self, call_id: str) -> None: ...

    async def transfer(self, call_id: str, *, by: str, kind: str, target: str) -> TransferView:
        ...

    def get_transfer(self, transfer_id: str) -> TransferView: ...

    async def complete_transfer(self, transfer_id: str) -> TransferView: ...

    async def cancel_transfer(self, transfer_id: str) -> TransferView: ...

    async def set_recording(self, call_id: str, *, by: str, action: str) -> RecordingView: ...

    def list_voicemail(self, extension: str) -> Sequence[VoicemailView]: ...
