"""``python -m statespaces`` and the ``statespaces`` console script."""
import sys

from .train.cli import main

if __name__ == "__main__":
    sys.exit(main())
