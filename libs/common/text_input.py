"""Text a service can store: PostgreSQL text cannot hold NUL (0x00), and a request carrying one used
to reach the database and fail as an internal error. The server interceptor refuses it up front, for
every service and every method, naming the field."""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from libs.common.errors import FieldViolation

NUL_MESSAGE = "must not contain NUL (0x00) characters"


def nul_violations(message: Message, prefix: str = "") -> list[FieldViolation]:
    """A violation for every string field (nested and repeated included) that contains NUL."""
    found: list[FieldViolation] = []
    for field, value in message.ListFields():
        name = prefix + field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            values = value if field.is_repeated else [value]
            if any("\x00" in text for text in values):
                found.append(FieldViolation(name, NUL_MESSAGE))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                texts = [str(key) for key in value] + [v for v in value.values() if isinstance(v, str)]
                if any("\x00" in text for text in texts):
                    found.append(FieldViolation(name, NUL_MESSAGE))
                continue
            for item in value if field.is_repeated else [value]:
                found.extend(nul_violations(item, name + "."))
    return found
