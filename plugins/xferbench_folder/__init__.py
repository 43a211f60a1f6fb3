"""Built-in xferbench plugin: folder (being written)."""
