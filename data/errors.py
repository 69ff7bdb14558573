"""The one exception type of the data package.

Every message is one line that says what was wrong and how to fix it (which file, which setting), so the
entry point can print it as it is, without a traceback.
"""


class DataError(ValueError):
    """Missing, corrupt or inconsistent data, or an invalid data setting."""
