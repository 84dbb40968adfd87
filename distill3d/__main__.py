import sys

from distill3d.cli import main

sys.exit(main())
