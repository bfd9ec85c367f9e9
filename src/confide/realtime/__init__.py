"""Realtime delivery (NT5): the event log, the broker, the hub; see docs/realtime.md."""
