import sys

from nextlab.cli import main

sys.exit(main())
