"""The `clarion` command: run, migrate, seed, apikey, actors, serve, simulator."""
