"""``python -m sweep SPEC`` (from the pack's folder); see :mod:`sweep.cli`."""
import sys

from sweep.cli import main

sys.exit(main())
