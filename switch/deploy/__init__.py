"""Deployment: bring up, from nothing and idempotently, what the switch runs on.

`broker` runs the project's own RabbitMQ node (mutual TLS only, EXTERNAL login) and
provisions its users, permissions and topology; `bringup` is the command that makes the
PKI, the broker and the PostgreSQL database (`python -m switch.deploy.bringup`).
"""

from switch.deploy.broker import (
    BrokerError,
    BrokerNode,
    BrokerTLS,
    cut_off,
    definitions,
    ensure_broker,
    ensure_definitions,
    ensure_node,
    stop_node,
)

__all__ = [
    "BrokerError",
    "BrokerNode",
    "BrokerTLS",
    "cut_off",
    "definitions",
    "ensure_broker",
    "ensure_definitions",
    "ensure_node",
    "stop_node",
]
