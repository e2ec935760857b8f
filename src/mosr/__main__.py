"""``python -m mosr`` (and ``accelerate launch -m mosr``, ``torchrun -m mosr``): the command line of :mod:`mosr.cli`."""

import sys

from mosr.cli import main

sys.exit(main())
