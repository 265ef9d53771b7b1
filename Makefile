# The two commands of the README. Both install first (idempotent).
.PHONY: setup demo test bench

setup:
	./scripts/setup.sh

demo: setup
	. .venv/bin/activate && tatbot-pipeline demo $(DEMO_ARGS)

test:
	./scripts/setup.sh --with-test-deps
	. .venv/bin/activate && python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

bench: setup
	. .venv/bin/activate && for b in bench/bench_*.py; do python "$$b" || exit 1; done
