"""Where upstream servers run: their private directories and launch wrappers (none, bubblewrap, Docker)."""
