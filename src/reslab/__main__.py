from reslab.cli.main import main

raise SystemExit(main())
