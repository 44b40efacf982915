"""``python -m spine_core.inference.train``: the ``spine train`` options, run directly."""

from spine_core.inference.train.run import main

raise SystemExit(main())
