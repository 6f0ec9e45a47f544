"""The drift history on disk: the SQLite store of leaf changes and last results, its schema,
retention, the timeline read from it, and the DNS policy history."""
