"""The jobs service: its home, filled in by its own issue (see ARCHITECTURE.md)."""
