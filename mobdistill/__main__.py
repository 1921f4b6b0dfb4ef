import sys

from mobdistill.cli import main

sys.exit(main())
