"""rtpswitch: an ISO 20022 real-time payments clearing switch."""

__version__ = "0.1.0"
