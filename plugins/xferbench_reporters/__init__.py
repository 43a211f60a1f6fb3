"""Built-in xferbench plugin: reporters (being written)."""
