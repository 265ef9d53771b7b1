"""Running a trained policy on the robot: the `vla_infer` rollout loop and the MCP server exposing it."""
