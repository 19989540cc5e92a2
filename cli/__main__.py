import sys

from clarion.cli.main import main

sys.exit(main())
