"""The FastAPI adapter: the lifespan that migrates before serving, and the readiness route."""
