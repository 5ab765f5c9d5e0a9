"""The application: the `Hub` wiring and lifecycle, configuration sources, `hub serve` and
`hub demo`."""
