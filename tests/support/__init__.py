"""Helpers the tests import: apps, backends, services, private servers, polls.

Test folders hold only test modules, their ``conftest.py`` and the apps their tests launch as
processes; everything a test imports lives here.
"""
