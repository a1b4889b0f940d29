"""DTMF for switch: in-band detection (numpy, batched), RFC 4733, SIP INFO, merging, feature codes.

Sans-I/O (DESIGN.md rule 1): nothing here does I/O or reads a clock; time is
always passed in as ``now`` (seconds).
"""

from __future__ import annotations
