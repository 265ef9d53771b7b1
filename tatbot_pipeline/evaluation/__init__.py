"""Offline evaluation of a checkpoint on held-out episodes, and the gate that decides what may go to the robot."""
