from digestd.cli import main

raise SystemExit(main())
