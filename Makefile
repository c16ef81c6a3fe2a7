# The two commands of the README. Each creates .venv/ on first use (tools/install.sh, idempotent).
PY := .venv/bin/python

.PHONY: demo test install

install:
	@bash tools/install.sh

demo: install
	$(PY) tools/demo.py

test: install
	$(PY) -m pytest tests
