"""Agent alerts (docs/agents.md): ring mobile agents' devices on the contact centre's routing
events, and stop ringing them.

- ``events.py``: the routing events as they arrive (webhook or event stream), checked and
  filtered; pure.
- ``alerts.py``: what each device is sent for a ring or a cancel (APNs, FCM, custom HTTP and
  comet renderings); pure.
- ``outbound.py``: the notification a ring hands to the delivery platform, and the outbox it is
  handed to.
- ``service.py``: :class:`AgentAlerts`: the device registry, intake, rings, cancels, dead tokens,
  the per-conversation trail; each change one database transaction (SQL in
  ``chatpush/store/agents.py``).
- ``stream.py``: the event-stream client (one WebSocket across instances, held by a lease).

A source of the delivery platform beside the chat pipeline: it imports the store and the base
modules, never ``chat/`` or ``push/``.
"""
