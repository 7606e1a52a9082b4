"""Process settings: where the database, broker and Redis are, and the keys."""
