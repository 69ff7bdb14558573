"""The exception types of the data package, and the helper that keeps their messages on one line.

Every message is one line that says what was wrong and how to fix it (which file, which setting), so the
entry point can print it as it is, without a traceback.
"""


class DataError(ValueError):
    """Missing, corrupt or inconsistent data, or an invalid data setting."""


class DatasetMixUp(DataError):
    """The data is another dataset (or label set) than the one asked for: the usual cifar10/cifar100 mix-up.

    The message suggests the trainer's setting that fits (`dataset=...`). A command without that setting (the
    tools, which take the run's) says it its own way from the parts: `where` (the path or source at fault)
    and `holds` (what is there, as a predicate: "holds CIFAR-100", "has 20 classes").
    """

    def __init__(self, message: str, where: str, holds: str):
        super().__init__(message)
        self.where, self.holds = where, holds


def one_line(text: str, limit: int = 200) -> str:
    """`text` on one line, at most `limit` characters: messages quote file contents and exceptions."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
