"""The tatbot robot: joint layout and limits (spec), later the sim and hardware backends."""
