"""What every Aether service shares. One module per concern; see docs/architecture.md."""
