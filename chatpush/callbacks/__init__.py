"""Callbacks: the GMS Callback API's record, state machine, contact-centre commands and events,
and their durable timers (docs/callbacks.md). A source of its own in the domain layer: it never
imports the chat domain."""
