# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv from scratch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-output

.PHONY: demo test setup clean benchmark

setup: $(STAMP)

$(STAMP): pyproject.toml constraints-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints-dev.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints-dev.txt -e ".[dev,train]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/medical-denoise demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# About two hours on 2 cores (BM4D, the non-local means, the realistic-noise observer study and adapting dominate);
# not part of `make test`.
benchmark: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints-dev.txt -e ".[baselines]"
	$(BIN)/python benchmarks/speed_memory.py --cli --out docs/benchmarks.md
	$(BIN)/python benchmarks/speed_memory.py --model gan-v1 --sizes 256 --section speed_memory_gan --out docs/benchmarks.md
	$(BIN)/python benchmarks/speed_memory.py --sizes 820x616 82x96x64 512x512 --cli --section speed_memory_2d --out docs/benchmarks.md
	$(BIN)/python benchmarks/planar.py autoencoder-v2 --out docs/benchmarks.md
	$(BIN)/python benchmarks/planar.py autoencoder-v3 --out docs/benchmarks.md
	$(BIN)/python benchmarks/quality.py --bm4d-crop 64 --out docs/benchmarks.md
	$(BIN)/python benchmarks/real_noisy.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/targets.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/realistic.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/sublattice.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/adapt.py --minutes 2 --out docs/benchmarks.md
	$(BIN)/python benchmarks/server_load.py --out docs/benchmarks.md

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
