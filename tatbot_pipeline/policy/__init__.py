"""A checkpoint as a policy: loading it the way LeRobot does (loading.py) and the two inference modes it can run
in, with their chunk latency budgets (modes.py). Offline evaluation and the rollout both use it."""
