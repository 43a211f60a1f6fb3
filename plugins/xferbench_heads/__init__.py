"""Built-in xferbench plugin: heads (being written)."""
