import sys

from toxlens.cli import main

sys.exit(main())
