"""The chat domain: sessions, parties, the transcript and secure keys."""
