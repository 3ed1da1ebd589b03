"""The study: its decisions as pure functions (decisions), one cell (cell, train_cell), the locks, the
manifest, choosing and testing (choose), progress (census), figures, and the run itself (run)."""
