"""The embedded runtime: Redis servers and warm worker processes standing in for Lambda."""
