"""``python -m liteasr_hf.cli <command>``: the ``liteasr`` command where no script is on the path, and under
``torchrun ... -m liteasr_hf.cli compress`` or ``accelerate launch ... -m liteasr_hf.cli compress``."""

import sys

from . import main

sys.exit(main())
