"""Local stand-ins for production services, for tests and rehearsals on one machine."""
