"""Finding secrets in text (the engine) — no gateway imports."""
