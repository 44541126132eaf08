"""`python -m lenet5.report`: the same as `lenet5-report`."""

import sys

from lenet5.report.cli import main

sys.exit(main())
