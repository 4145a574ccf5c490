import sys

from ipt_data.cli import main

sys.exit(main())
