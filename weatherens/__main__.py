import sys

from weatherens.cli import main

sys.exit(main())
