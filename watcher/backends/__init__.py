"""Where the queue, the leases and liveness live: SQLite on one host, Redis on several."""
