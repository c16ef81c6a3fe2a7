# The two commands of the README. Each creates .venv/ on first use (tools/install.sh, idempotent).
PY := .venv/bin/python

.PHONY: demo test test-fast install

install:
	@bash tools/install.sh

demo: install
	$(PY) tools/demo.py

test: install
	$(PY) -m pytest tests

# the fast lane: everything but the tests marked subprocess / slow (pytest.ini); `make test` and CI run all
test-fast: install
	$(PY) -m pytest tests -m "not subprocess and not slow"
