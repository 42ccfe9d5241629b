"""Participant transports: in-process (embedded default) and AMQP over mTLS."""

from switch.transport.base import Delivery, ParticipantChannel, SwitchTransport
from switch.transport.local import LocalChannel, LocalNetwork, LocalSwitchTransport

__all__ = [
    "Delivery",
    "LocalChannel",
    "LocalNetwork",
    "LocalSwitchTransport",
    "ParticipantChannel",
    "SwitchTransport",
]
