"""``nexus``: the one command line. Argument parsing only; the work lives in the daemon and storage packages."""
