"""The tatbot robot: joint layout and limits (spec), scenes, the safety envelope and the backends behind one
`Robot` interface (base): `sim` (simulated, the default) and `tatbot` (real arms + RealSense cameras)."""
