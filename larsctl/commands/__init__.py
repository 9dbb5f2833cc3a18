"""One module per larsctl command (group), attached lazily by larsctl.cli."""
