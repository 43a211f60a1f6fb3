"""Built-in xferbench plugin: keras (being written)."""
