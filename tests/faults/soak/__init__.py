"""The long fault soak of issue #12: a driver runnable as ``python -m tests.faults.soak`` and a
short variant in the slow test suite (`tests/faults/soak/test_short_soak.py`)."""
