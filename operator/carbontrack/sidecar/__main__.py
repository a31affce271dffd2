from carbontrack.sidecar.app import main

raise SystemExit(main())
