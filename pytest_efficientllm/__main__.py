"""`python -m pytest_efficientllm compare|merge|report|export-benchmark-action ...`"""

import sys

from pytest_efficientllm.cli import main

sys.exit(main())
