"""`python -m lenet5.report`: the same as `lenet5-report`."""

import sys

from lenet5.report.command import main

sys.exit(main())
