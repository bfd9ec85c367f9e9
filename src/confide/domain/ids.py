"""Typed ids, so a client id is never passed where a member id belongs."""

from typing import NewType

PracticeId = NewType("PracticeId", int)
MemberId = NewType("MemberId", int)
ClientId = NewType("ClientId", int)
ContactId = NewType("ContactId", int)
ConversationId = NewType("ConversationId", int)
MessageId = NewType("MessageId", int)
