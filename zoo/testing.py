"""Fixtures and contract checks for plugin authors (a ``pytest11`` plugin).

Filled in by the plugin-authoring work; importing it must stay cheap (no torch at import).
"""
