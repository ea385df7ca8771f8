"""``python -m fer_lightning.bench``: see ``fer_lightning.bench.suite``."""

import sys

from fer_lightning.bench.suite import main

sys.exit(main())
