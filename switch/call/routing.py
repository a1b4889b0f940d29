"""Routing decisions of call control, as pure functions.

* ``target_user_part``: what the caller dialed (the Request-URI user part, or a
  tel: URI's number).
* ``best_response``: the final status the caller gets when every fork failed
  (RFC 3261 §16.7 step 6: a 6xx wins; otherwise the lowest class, where some
  4xx are preferred; 503 becomes 500, since the upstream must not think *we*
  are overloaded).
* ``classify``: the result label of a call that ended with a status.
"""

from __future__ import annotations

from collections.abc import Sequence

from switch.call.model import CallResult
from switch.sip.uri import SipUri, TelUri, parse_request_uri

__all__ = ["best_response", "classify", "target_user_part"]

# §16.7 step 6: among 4xx, these carry information the caller can act on.
_PREFERRED_4XX = (401, 407, 415, 420, 484)


def target_user_part(request_uri: str) -> str | None:
    uri = parse_request_uri(request_uri)
    if isinstance(uri, SipUri):
        return uri.user_unescaped or None
    if isinstance(uri, TelUri):
        return uri.digits or None
    return None


def best_response(statuses: Sequence[int]) -> int:
    """RFC 3261 §16.7 step 6 over the forks' final responses (480 when there are none)."""
    finals = [s for s in statuses if 300 <= s < 700]
    if not finals:
        return 480
    sixes = [s for s in finals if s >= 600]
    if sixes:
        return sixes[0]
    lowest_class = min(s // 100 for s in finals)
    same = [s for s in finals if s // 100 == lowest_class]
    if lowest_class == 4:
        for preferred in _PREFERRED_4XX:
            if preferred in same:
                return preferred
        # Busy beats "no answer" beats anything else: what the caller hears matters.
        for status in (486, 480, 408):
            if status in same:
                return status
    chosen = same[0]
    return 500 if chosen == 503 else chosen


def classify(status: int) -> CallResult:
    """The result of a call whose caller got ``status`` (2xx: answered)."""
    if 200 <= status < 300:
        return CallResult.ANSWERED
    if status in (486, 600, 603):
        return CallResult.BUSY
    if status in (408, 480):
        return CallResult.NO_ANSWER
    if status == 487:
        return CallResult.CANCELLED
    return CallResult.FAILED
