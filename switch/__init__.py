"""switch: a telephony call-control engine."""

__version__ = "0.1.0"
