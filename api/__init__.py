"""keymeta HTTP adapter (FastAPI): parsing, wiring, and turning outcomes into signed envelopes."""
