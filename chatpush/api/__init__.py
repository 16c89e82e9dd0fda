"""HTTP edges, kept thin: Chat API v2, the chat-server side API, health."""
