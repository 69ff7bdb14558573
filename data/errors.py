"""The one exception type of the data package, and the helper that keeps its messages on one line.

Every message is one line that says what was wrong and how to fix it (which file, which setting), so the
entry point can print it as it is, without a traceback.
"""


class DataError(ValueError):
    """Missing, corrupt or inconsistent data, or an invalid data setting."""


def one_line(text: str, limit: int = 200) -> str:
    """`text` on one line, at most `limit` characters: messages quote file contents and exceptions."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
