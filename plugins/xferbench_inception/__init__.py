"""Built-in xferbench plugin: inception (being written)."""
