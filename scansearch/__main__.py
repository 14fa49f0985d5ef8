import sys

from scansearch.cli import main

sys.exit(main())
