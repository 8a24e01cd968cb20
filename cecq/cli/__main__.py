import sys

from cecq.cli import main

sys.exit(main())
