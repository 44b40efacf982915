from spine_core.inference.wholespine.train import main

raise SystemExit(main())
