#!/usr/bin/env python
"""Earth Engine exports for cropseg (a thin wrapper over ``cropseg gee``).

    tools/gee_export.py samples    [dry_run=true] [follow=true] [key=value ...]
    tools/gee_export.py composites [dry_run=true] [follow=true] [key=value ...]
    tools/gee_export.py status     [poll=false] [all=true]

See docs/gee.md and conf/gee.yaml.
"""

import sys

from cropseg.gee.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
