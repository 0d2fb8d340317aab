"""Helpers shared by tests, imported one way: ``from tests.helpers.<module> import ...``.

Fixtures live in the ``conftest.py`` files; plain functions and small stand-ins live here.
"""
