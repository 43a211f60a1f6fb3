"""Built-in xferbench plugin: lenet5 (being written)."""
