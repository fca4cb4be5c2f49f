"""Client access: API keys (stored hashed), the HTTP middleware that admits clients, and the pipeline
stage that checks each call against its key."""
