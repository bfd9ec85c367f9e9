"""Work done after commit, from stored state: idempotent, resumable."""
