"""Query functions, scoped by practice. Repos never commit: the unit of work does."""
