"""``python -m accel_sim`` runs the command line."""

import sys

from accel_sim.cli import main

sys.exit(main())
