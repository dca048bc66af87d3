"""The plugin author's kit: the pytest plugin and contract checks (``zoo.testing``), the scaffold."""
