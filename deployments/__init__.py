"""How Perennial is deployed beyond `perennial serve` (not part of the installed package):
`topology/` starts the production topology on one machine (docs/topology.md)."""
