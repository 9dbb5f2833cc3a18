"""The one exception the data layer raises for bad input (the trainer turns it into exit 2)."""
from __future__ import annotations


class DataError(Exception):
    """Bad input data: the message names the path or field and what was expected."""
