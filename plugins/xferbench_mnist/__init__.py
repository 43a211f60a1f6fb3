"""Built-in xferbench plugin: mnist (being written)."""
