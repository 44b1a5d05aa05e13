import sys

from drumdiff.cli import main

sys.exit(main())
