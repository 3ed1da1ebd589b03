"""`python -m report_builder`: the command line of report_builder.cli."""

import sys

from report_builder.cli import main

if __name__ == "__main__":
    sys.exit(main())
