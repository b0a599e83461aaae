# The README's commands, plus the benchmark. `make bench` needs Redis (redis-server binary)
# and PostgreSQL on 127.0.0.1:5432, as the tests do; `./dev test` starts them when they are down.
.PHONY: up test bench bench-smoke

up:
	./dev up

test:
	./dev test

# `./dev test --collect-only` installs on a fresh clone and starts Redis/PostgreSQL; it runs no test.
bench:
	./dev test --collect-only -q -p no:cacheprovider tests/integration/test_bench_smoke.py >/dev/null
	PYTHONPATH=. .venv/bin/python -m bench.run

bench-smoke:
	PYTHONPATH=. .venv/bin/python -m bench.run --smoke --no-docs
