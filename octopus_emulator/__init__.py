"""Octopus Deploy server emulator for tests, benchmarks and the local demo (not product code).

See ``octopus_emulator/README.md``. Entry point: ``python -m octopus_emulator serve``.
"""
