"""DTMF for switch: in-band detection (numpy, batched), RFC 4733, SIP INFO, merging, feature codes.

Sans-I/O (DESIGN.md rule 1): nothing here does I/O or reads a clock; time is
always passed in as ``now`` (seconds).
"""

from __future__ import annotations

from switch.dtmf.collector import DigitCollector
from switch.dtmf.events import (
    DigitDetected,
    InbandToneEnded,
    InbandToneStarted,
    Method,
    TelephoneEventEnded,
    TelephoneEventStarted,
)
from switch.dtmf.features import (
    BlindTransferRequested,
    DigitsReleased,
    FeatureCode,
    FeatureInvoked,
    FeatureMatcher,
    WarmTransferRequested,
)
from switch.dtmf.inband import DetectorParameters, InbandDetector
from switch.dtmf.info import InfoBodyError, InfoDigit, parse_info_body
from switch.dtmf.rfc4733 import TelephoneEventReceiver, telephone_event_packets

__all__ = [
    "BlindTransferRequested",
    "DetectorParameters",
    "DigitCollector",
    "DigitDetected",
    "DigitsReleased",
    "FeatureCode",
    "FeatureInvoked",
    "FeatureMatcher",
    "InbandDetector",
    "InbandToneEnded",
    "InbandToneStarted",
    "InfoBodyError",
    "InfoDigit",
    "Method",
    "TelephoneEventEnded",
    "TelephoneEventReceiver",
    "TelephoneEventStarted",
    "WarmTransferRequested",
    "parse_info_body",
    "telephone_event_packets",
]
