"""The command line around `train.loop.run`: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import sys

from data import DataError
from nets import NetError
from train.checkpoint import CheckpointError
from train.config import ConfigError, parse
from train.loop import TrainingDiverged, run

# Errors caused by what the user asked for or pointed at: reported without a traceback.
USER_ERRORS = (ConfigError, DataError, NetError, CheckpointError)


def main(argv: list[str]) -> int:
    try:
        run(parse(argv))
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
