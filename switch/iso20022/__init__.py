"""The ISO 20022 message layer: schema registry, hardened parsing, typed views, builders.

Bytes come in through `parse` (hardened, classified), are checked by `validate` against
the scheme's own schemas, read through the typed views, and answered with messages from
the builders. `reasons` is the one registry of ISO reason codes.
"""

from switch.iso20022 import build, views
from switch.iso20022.parse import (
    BadEnvelope,
    EmptyMessage,
    ForbiddenDTD,
    Message,
    MessageTooDeep,
    MessageTooLarge,
    NotWellFormed,
    ParseLimits,
    SchemaIssue,
    UnknownNamespace,
    UnusableMessage,
    parse,
    validate,
)
from switch.iso20022.reasons import REASONS, SWITCH_REASONS, ReasonCode, reason
from switch.iso20022.registry import (
    ENVELOPE_NS,
    MessageType,
    SchemaRegistry,
    default_registry,
    message_type,
)

__all__ = [
    "ENVELOPE_NS",
    "REASONS",
    "SWITCH_REASONS",
    "BadEnvelope",
    "EmptyMessage",
    "ForbiddenDTD",
    "Message",
    "MessageTooDeep",
    "MessageTooLarge",
    "MessageType",
    "NotWellFormed",
    "ParseLimits",
    "ReasonCode",
    "SchemaIssue",
    "SchemaRegistry",
    "UnknownNamespace",
    "UnusableMessage",
    "build",
    "default_registry",
    "message_type",
    "parse",
    "reason",
    "validate",
    "views",
]
