"""``python -m spine_web``: the box-event route in its own process (:mod:`spine_web.route_server`)."""

from spine_web.route_server import main

raise SystemExit(main())
