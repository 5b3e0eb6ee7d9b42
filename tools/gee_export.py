#!/usr/bin/env python
"""Earth Engine exports for cropseg (a thin wrapper over ``cropseg gee``).

    tools/gee_export.py samples    [--dry-run] [--follow] [key=value ...]
    tools/gee_export.py composites [--dry-run] [--follow] [key=value ...]
    tools/gee_export.py status     [--no-poll] [--all]

See docs/gee.md and conf/gee.yaml.
"""

import sys

from cropseg.gee.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
