"""`python -m train key=value ...`: train one net (keys: see train/config.py or the README)."""

import sys

from train.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
