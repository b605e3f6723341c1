"""Desktop agent: endpoint interception running the hooks locally, config from the hub."""
