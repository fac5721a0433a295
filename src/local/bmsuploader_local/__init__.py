"""Local stand-ins for the outside world: used by tests and `bmsuploader run-local`."""
