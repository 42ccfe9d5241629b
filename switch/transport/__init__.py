"""Participant transports: in-process (embedded default) and AMQP over mTLS."""

from switch.transport.base import Delivery, Observable, ParticipantChannel, SwitchTransport
from switch.transport.local import LocalChannel, LocalNetwork, LocalSwitchTransport

__all__ = [
    "Delivery",
    "LocalChannel",
    "LocalNetwork",
    "LocalSwitchTransport",
    "Observable",
    "ParticipantChannel",
    "SwitchTransport",
]
