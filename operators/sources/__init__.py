"""Sources: turn a corpus location into rows with stable ids."""
