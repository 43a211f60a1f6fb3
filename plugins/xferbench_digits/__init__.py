"""Built-in xferbench plugin: digits (being written)."""
