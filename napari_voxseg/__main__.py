from napari_voxseg.cli import main

raise SystemExit(main())
