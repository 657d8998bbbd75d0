"""Typed contracts of vlmbatch: job specs, column names, record schemas, statuses.

Imports pydantic and pyarrow only, so every other package (and a driver with no GPU
stack) can depend on it cheaply.
"""
