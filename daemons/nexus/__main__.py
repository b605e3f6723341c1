from nexus.cli.main import main

raise SystemExit(main())
