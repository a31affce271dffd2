from carbontrack.cli.main import main

raise SystemExit(main())
