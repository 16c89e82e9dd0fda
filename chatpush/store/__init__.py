"""Storage: tables, the engine, and the repositories. Every SQL statement of chatpush lives here."""
