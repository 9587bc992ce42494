"""``python -m dagger``: the command line."""

import os
import sys

# `python -m` puts the working directory first on sys.path; the `dagger` command does not.
# Reading a store imports its state class by the module name experiment.json gives, and that
# must not pick up whatever module of that name the working directory holds: both ways of
# running the command see the same modules.
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from .cli import main

sys.exit(main())
