"""RFC 3261 transaction timer values (§17, Table 4 of Appendix A), sans-I/O.

Every timer is a duration; the transaction layer turns it into a deadline by
adding the ``now`` it was given.  ``None`` means "not started" (the
retransmission timers A, E and G over a reliable transport, §17.1.1.2,
§17.1.2.2, §17.2.1) and ``0.0`` means "fires at once" (the wait timers D, I,
J and K over a reliable transport, whose only purpose is to absorb UDP
retransmissions).

Besides the RFC timers there are two guards, so that no transaction lives
forever when its other side goes quiet:

* ``timer_c`` bounds an INVITE client transaction in Proceeding (the proxy's
  Timer C of §16.6 item 11, > 3 min); on expiry the TU is told the request
  timed out, which it treats as a 408 (§8.1.3.1).
* ``tu_timeout`` bounds a server transaction whose TU never sends a final
  response (it crashed, or forgot): the endpoint then answers 500 itself.
  Default 64*T1, the time a client waits before giving up (Timer B/F).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerConfig:
    """T1, T2, T4 (RFC 3261 §17.1.1.1, §17.1.2.2) and the guards, in seconds."""

    t1: float = 0.5            # RTT estimate
    t2: float = 4.0            # maximum retransmit interval for non-INVITE and responses
    t4: float = 5.0            # maximum duration a message stays in the network
    timer_d: float = 32.0      # §17.1.1.2: "at least 32 seconds" for unreliable transports
    timer_c: float = 180.0     # §16.6 item 11: "greater than 3 minutes"
    tu_timeout: float | None = None   # None: 64*T1

    def __post_init__(self) -> None:
        if self.t1 <= 0 or self.t2 < self.t1 or self.t4 <= 0:
            raise ValueError(f"need 0 < t1 <= t2 and t4 > 0, got {self}")
        if self.timer_d < 0 or self.timer_c <= 0:
            raise ValueError(f"bad timer_d/timer_c in {self}")
        if self.tu_timeout is not None and self.tu_timeout <= 0:
            raise ValueError(f"bad tu_timeout in {self}")

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J (unreliable), L and M (§17, RFC 6026 §8)."""
        return 64.0 * self.t1

    @property
    def tu_guard(self) -> float:
        return self.tu_timeout if self.tu_timeout is not None else 64.0 * self.t1

    # --- per timer, ``None`` = not started, ``0.0`` = fires immediately ---------

    def retransmit_first(self, reliable: bool) -> float | None:
        """Timers A, E, G start at T1 over UDP and are not used over TCP."""
        return None if reliable else self.t1

    def timer_d_for(self, reliable: bool) -> float:
        return 0.0 if reliable else self.timer_d

    def timer_i_for(self, reliable: bool) -> float:
        return 0.0 if reliable else self.t4

    def timer_j_for(self, reliable: bool) -> float:
        return 0.0 if reliable else 64.0 * self.t1

    def timer_k_for(self, reliable: bool) -> float:
        return 0.0 if reliable else self.t4


DEFAULT_TIMERS = TimerConfig()
