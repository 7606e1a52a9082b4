"""Long-running processes that are not actors: scheduler, admin, runners."""
