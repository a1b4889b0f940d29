"""python -m switch"""

from switch.cli import main

raise SystemExit(main())
